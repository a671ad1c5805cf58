"""`python -m components.local`: the same command as `scaleladder-local`."""

import sys

from components.local.cli import main

sys.exit(main())
