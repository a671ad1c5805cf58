"""Shared setup for every test directory (tests/ and services/sample/tests/)."""

import signal

# A shell starts its background jobs (`cmd &`, nohup) with SIGINT ignored, and an ignored signal stays
# ignored in every program they start: Python then installs no Ctrl-C handler, and `sh` cannot trap it.
# The tests that press Ctrl-C on a child (the local runner, `sample listen`) need what a terminal
# gives, so the test run handles SIGINT itself; its children start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
