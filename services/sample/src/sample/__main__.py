"""`python -m sample` is the `sample` command."""

import sys

from sample.cli import main

sys.exit(main())
