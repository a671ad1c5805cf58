"""A steady writer for failover tests: it commits numbered rows and records which were acknowledged.

    writer = Writer(dsn, table="writes")     # creates the table, then commits a row every `pause` seconds
    ...                                       # kill a server, switch over, cut the network
    writer.stop()
    writer.acknowledged                       # ids whose COMMIT returned
    writer.longest_gap(since)                 # the longest time without an acknowledged commit

Each row is its own transaction on one connection; on an error the writer reconnects (the DSN
decides where: a multi-host URL with target_session_attrs=read-write follows the writable server,
as the `postgres-rw` Service does).
"""

from __future__ import annotations

import itertools
import threading
import time

import psycopg


class Writer:
    """A thread committing `INSERT INTO table (id) VALUES (n)` for n = 1, 2, ..."""

    def __init__(self, dsn: str, table: str = "writes", pause: float = 0.01) -> None:
        self.dsn = dsn
        self.table = table
        self.pause = pause
        self.acknowledged: list[int] = []
        self.times: list[float] = []
        """Monotonic time of each acknowledgement, in the order of `acknowledged`."""
        self.ports: list[int] = []
        """The server port that acknowledged each, in the same order."""
        self.errors = 0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{table}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_id = 1
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                conn.execute(f"INSERT INTO {self.table} (id) VALUES (%s) ON CONFLICT DO NOTHING", (next_id,))
                self.times.append(time.monotonic())
                self.ports.append(conn.info.port)
                self.acknowledged.append(next_id)
                next_id += 1
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                next_id += 1  # the outcome of that id is unknown: never reuse it
                time.sleep(0.05)
            self._stop.wait(self.pause)
        if conn is not None:
            conn.close()

    def wait_for_more(self, count: int = 20, timeout: float = 120.0) -> None:
        """Wait until `count` more commits are acknowledged (the writer is writing again)."""
        target = len(self.acknowledged) + count
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"writer {self.table}: fewer than {count} commits within {timeout}s")
            time.sleep(0.05)

    def longest_gap(self, since: float) -> float:
        """The longest time without an acknowledged commit from `since` to the last one."""
        times = [since, *(t for t in self.times if t > since)]
        if len(times) < 2:
            raise AssertionError(f"writer {self.table}: no commit acknowledged after {since}")
        return max(b - a for a, b in itertools.pairwise(times))

    def first_after(self, moment: float, port: int) -> float:
        """Seconds from `moment` to the first acknowledgement after it by the server on `port`."""
        return next(t for t, p in zip(self.times, self.ports, strict=True) if t > moment and p == port) - moment

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
