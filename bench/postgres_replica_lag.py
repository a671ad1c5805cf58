"""Benchmark: how far the kit's streaming replicas trail the primary under a sustained write load.

Builds the phase-3 group on loopback with the kit's own scripts and server settings
(bench/postgres_support.py: a primary initialised with primary-init.sh, replicas cloned from it as
Patroni clones them, each streaming through its own slot; Patroni itself is not run: once a replica
streams, the WAL path is Postgres's alone), with durable settings (fsync and full_page_writes on,
synchronous_commit on: each commit waits for its WAL flush on the primary; replication itself is
asynchronous, as in phase 3, where `ha.synchronous_mode` is off). Then, `--runs` times, two loads of
`--seconds` each against the same group: paced (`--rate` commits/s in total, default 1,000) and
unthrottled. During each:

- `--writers` connections commit single-row INSERTs (200-byte rows); after each commit a writer
  records the time the commit was acknowledged and the primary's WAL flush position
  (`pg_current_wal_flush_lsn()`, at or past that commit's record: conservative);
- one poller process per replica reads `pg_last_wal_replay_lsn()` every millisecond, recording
  when each answer came back;
- the primary's own `pg_stat_replication.replay_lag` is sampled every 10 ms (the server's own measure,
  free of the pollers' scheduling noise).

Visibility lag of a commit = first poll answer showing a replay position at or past the commit's
flush position, minus the commit's acknowledgement time (0 if the replica was already there). Its
error is at most one poll interval (printed). The first second is warm-up and is left out.

Usage: `uv run python bench/postgres_replica_lag.py [--seconds 10] [--runs 3] [--writers 4] [--replicas 2]
[--rate 1000]`.
Prints a table per load and a summary (median and range over the runs); asserts nothing.
Target (issue 4): visibility lag p99 under 10 ms.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType

from bench.postgres_support import Member, clone_replica, start_primary, wait_replayed, write_scripts
from components.postgres import PostgresPasswords, PostgresSpec

DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
WARM_UP_SECONDS = 1.0
TARGET_P99_MS = 10.0
ROW = "x" * 200
POLL_PAUSE = 0.001


@dataclass
class Samples:
    """Times (perf_counter seconds) and WAL positions (bytes), in the order they were taken."""

    times: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


def write(member: Member, stop: threading.Event, interval: float, commits: Samples, latencies: list[float]) -> None:
    """Commit one row every `interval` seconds (0: back to back); a late writer catches up at once."""
    with member.connect() as conn:
        due = time.perf_counter()
        while not stop.is_set():
            due += interval
            time.sleep(max(0.0, due - time.perf_counter()))
            started = time.perf_counter()
            conn.execute("INSERT INTO load (body) VALUES (%s)", (ROW,))
            acknowledged = time.perf_counter()
            row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint").fetchone()
            assert row is not None
            commits.times.append(acknowledged)
            commits.positions.append(int(row[0]))
            latencies.append(acknowledged - started)


def poll(member: Member, stop: EventType, results: Queue[Samples]) -> None:
    """In its own process (no GIL shared with the writers): the replay position every POLL_PAUSE.

    A tight loop would take a whole core from the replicas it measures on a small machine.
    """
    replayed = Samples()
    with member.connect() as conn:
        while not stop.wait(POLL_PAUSE):
            row = conn.execute("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint").fetchone()
            assert row is not None
            replayed.times.append(time.perf_counter())
            replayed.positions.append(int(row[0]))
    results.put(replayed)


def sample_replay_lag(primary: Member, stop: threading.Event, lags: dict[str, list[float]]) -> None:
    query = (
        "SELECT s.slot_name, extract(epoch FROM r.replay_lag) * 1000 FROM pg_stat_replication r"
        " JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.replay_lag IS NOT NULL"
    )
    with primary.connect() as conn:
        while not stop.wait(0.01):
            for slot, lag in conn.execute(query).fetchall():
                lags.setdefault(slot, []).append(float(lag))


def visibility_lags(commits: list[tuple[float, int]], replayed: Samples) -> list[float]:
    """Milliseconds from each commit's acknowledgement to the first poll that shows it replayed."""
    lags = []
    for acknowledged, position in commits:
        index = bisect.bisect_left(replayed.positions, position)
        if index == len(replayed.positions):
            continue  # not replayed before the run ended (the run's last instants)
        lags.append(max(0.0, replayed.times[index] - acknowledged) * 1000)
    return lags


def percentiles(values: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return at(0.5), at(0.9), at(0.99), ordered[-1]


def row(name: str, values: list[float]) -> str:
    p50, p90, p99, top = percentiles(values)
    return f"| {name} | {len(values):,} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {top:.2f} |"


def measure(primary: Member, members: list[Member], seconds: float, writers: int, rate: float) -> tuple[float, float]:
    """One load: `writers` connections at `rate` commits/s in total (0: unthrottled); prints its table.

    Returns the worst replica's visibility lag p99 and the commit latency p99, in ms.
    """
    stop, process_stop = threading.Event(), multiprocessing.Event()
    results: Queue[Samples] = multiprocessing.Queue()
    pollers = [multiprocessing.Process(target=poll, args=(m, process_stop, results)) for m in members]
    for poller in pollers:
        poller.start()
    commits = [Samples() for _ in range(writers)]
    latencies: list[list[float]] = [[] for _ in range(writers)]
    reported: dict[str, list[float]] = {}
    interval = writers / rate if rate else 0.0
    threads = [
        threading.Thread(target=sample_replay_lag, args=(primary, stop, reported)),
        *(
            threading.Thread(target=write, args=(primary, stop, interval, c, t))
            for c, t in zip(commits, latencies, strict=True)
        ),
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    process_stop.set()
    replayed = sorted((results.get(timeout=60) for _ in pollers), key=lambda samples: samples.times[0])
    for poller in pollers:
        poller.join()
    steady = started + WARM_UP_SECONDS
    measured = sorted((t, p) for c in commits for t, p in zip(c.times, c.positions, strict=True) if t >= steady)
    commit_ms = [
        latency * 1000
        for c, ls in zip(commits, latencies, strict=True)
        for t, latency in zip(c.times, ls, strict=True)
        if t >= steady
    ]
    load = f"{rate:,.0f} commits/s offered" if rate else "unthrottled"
    print(
        f"\n{load}: {writers} writers, {len(members)} replicas, {seconds:g} s ({WARM_UP_SECONDS:g} s warm-up left out),"
        f" {len(measured) / (seconds - WARM_UP_SECONDS):,.0f} commits/s achieved\n"
    )
    print("| what (ms) | samples | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|---|")
    print(row("commit latency on the primary (baseline)", commit_ms))
    worst = 0.0
    for samples in replayed:
        lags = visibility_lags(measured, samples)
        worst = max(worst, percentiles(lags)[2])
        print(row("visibility lag, one replica", lags))
    for samples in replayed:
        gaps = [(b - a) * 1000 for a, b in zip(samples.times, samples.times[1:], strict=False)]
        print(row("poll interval (lag resolution), one replica", gaps))
    for slot, values in sorted(reported.items()):
        print(row(f"pg_stat_replication.replay_lag, {slot} (every 10 ms)", values))
    commit_p99 = percentiles(commit_ms)[2]
    verdict = "met" if worst < TARGET_P99_MS else "NOT met"
    load_1m = os.getloadavg()[0]
    print(
        f"\nworst replica visibility lag p99 = {worst:.2f} ms = {worst / commit_p99:.2f} x the commit latency p99"
        f" ({commit_p99:.2f} ms); target < {TARGET_P99_MS:g} ms: {verdict}"
        f" (machine load average {load_1m:.1f} on {os.cpu_count()} CPUs)"
    )
    return worst, commit_p99


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def run(seconds: float, writers: int, replicas: int, rate: float, runs: int) -> None:
    """The group once; `runs` times the paced load, then the unthrottled one, against it."""
    spec = PostgresSpec(replicas=replicas)
    passwords = PostgresPasswords(app="bench-app-password", replication="bench-replication-password")
    scripts = write_scripts()
    primary = start_primary(spec, passwords, scripts, settings=DURABLE)
    members: list[Member] = []
    try:
        members = [clone_replica(primary, f"postgres-{n}") for n in range(1, replicas + 1)]
        primary.execute("CREATE TABLE load (id bigserial PRIMARY KEY, body text)")
        for member in members:
            wait_replayed(primary, member)
        print(f"durable settings on every member: {DURABLE}")
        results: dict[str, list[tuple[float, float]]] = {"paced": [], "unthrottled": []}
        for _ in range(runs):
            results["paced"].append(measure(primary, members, seconds, writers, rate))
            results["unthrottled"].append(measure(primary, members, seconds, writers, 0.0))
        print(f"\nsummary over {runs} run(s): median (min-max), ms\n")
        print("| load | worst replica visibility lag p99 | commit latency p99 | ratio |")
        print("|---|---|---|---|")
        for load, pairs in results.items():
            lags, commits = [lag for lag, _ in pairs], [commit for _, commit in pairs]
            ratios = [lag / commit for lag, commit in pairs]
            print(f"| {load} | {spread(lags)} | {spread(commits)} | {spread(ratios)} |")
    finally:
        for member in members:
            member.close()
        primary.close()
        shutil.rmtree(scripts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="times each load is repeated (default 3)")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writing connections (default 4)")
    parser.add_argument("--replicas", type=int, default=2, help="streaming replicas (default 2, as phase 3)")
    parser.add_argument("--rate", type=float, default=1000.0, help="commits/s of the paced load (default 1000)")
    args = parser.parse_args()
    run(args.seconds, args.writers, args.replicas, args.rate, args.runs)


if __name__ == "__main__":
    main()
