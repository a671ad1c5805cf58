"""Garbage-collector settings for a request-serving process, applied once startup is done.

A request allocates thousands of short-lived, mostly acyclic objects. With the default threshold the
collector runs a young-generation pass every 700 net allocations and, every few of those, walks the
older generations too, including everything imported at startup. Freezing the startup objects
takes them out of those walks, and a higher young threshold runs passes less often. The benchmark
(bench/run.py) measured about 20% less CPU per cached read with these settings; memory stays flat
because reference counting still frees acyclic garbage at once.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLD = 20


def tune() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
