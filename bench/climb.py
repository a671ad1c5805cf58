"""Benchmark: write unavailability of climbing the ladder in place, one rung at a time, with a steady writer.

    uv run python bench/climb.py [--runs 3] [--steps 1-2,2-3,3-4,4-5]

Everything runs on loopback with real servers (PostgreSQL 15, redis-server, a 3-master Redis Cluster)
and the real `sample serve` and `sample climb ...` processes. For each step and run:

- The old rung's data is seeded, then two service processes start: the old one on the old tier and
  the new one on the new tier, both *before* the step, behind a front (testsupport's TcpProxy) that
  plays the Service/Gateway: it sends every new connection to one of them.
- A steady writer goes through the front with the service's real writes, one every 20 ms (when an
  answer takes longer, the next starts at once): 1 -> 2 and 4 -> 5 place one-item orders for the
  seeded users (POST /orders, 201), 3 -> 4 logs in (POST /sessions, 201: a new session in Redis).
  During a freeze the old tier answers 503 with Retry-After; they are counted, the writer carries on.
  A login costs the service a scrypt hash (tens of ms, more on a busy machine), so the 3 -> 4 writer
  gets far fewer than 50 writes a second: compare its gap with its `baseline`, and with the reader's.
- The step, as the kit's Jobs run it: `sample climb <action>` runs with the new rung's env; when it
  exits 0 the front switches to the new service (as the Service would once the rollout is done),
  then the second pass runs (`move-sessions --final`, `adopt-shards --finish`) where the step has one.
- **write gap** = the longest time between two successive acknowledged writes, from the last one
  before the command starts to the first one after the step ended (switch and second pass included).
  `baseline` is the longest gap between writes acknowledged in the 2 s before the step: the writer's
  own noise floor here.
- `frozen_ms` is the command's own report (writes refused until its copy verified); `elapsed` its
  whole run, process start included. `moved` is what its reports say it copied.
- 3 -> 4 also runs an authenticated reader (GET /me every 20 ms, alternately with a seeded session,
  copied by the first pass, and with one the writer created in this run). A session created on the
  standalone after the first pass's scan is on the cluster only once `--final` copied it: the reader's
  401s between the switch and the end of `--final` are those sessions (target: about writes; both shown).

- 2 -> 3 keeps the Postgres StatefulSet (bench/climb_patroni.py, as tests/integration/
  test_climb_postgres_in_place.py does it): the phase-2 pod's container runs on loopback as rendered,
  the kit's phase-3 objects are applied to the simulated cluster's real kube-apiserver (started once
  for every run; Patroni's DCS, a new namespace per run), then the step is the "expand" stage: the
  phase-2 pod stopped (SIGINT, fast shutdown), its data directory handed to member postgres-0 and
  that member ALONE started by the real Patroni 4.1.5; it starts it as a secondary, finds no group,
  takes the leader lock and promotes it. One service tier (it does not change); its DATABASE_URL goes
  through a second TcpProxy that plays `postgres-rw`, retargeted to member 0's port the moment
  Patroni is launched (connections refused until its Postgres listens). The step ends when member 0
  reports itself primary and takes writes (`Patroni start -> leader`, polled); `Patroni log ...` is
  Patroni's own time from its first log line to "promoted self to leader". Writer: POST /orders.
  "contract" (the two replicas cloning) is not in the window: it does not stop writes.

What this does not measure: on a cluster the switch is a rollout, and the new pods becoming ready
(image pull, start, readiness probes) adds its own time to the freeze of 1 -> 2 and 4 -> 5; here the
new tier is already up and the switch is instantaneous. Everything shares one small machine
(`os.cpu_count()` is printed), so the figures are upper bounds of the data steps' own cost.
Targets (issue 16): write gap under 5 s for 1 -> 2 and 4 -> 5, under 1 s for 2 -> 3 and 3 -> 4.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.climb_support import Front, Service, Steady, climb, longest_gap, median, request
from testsupport.postgres import PostgresServer
from testsupport.redis import RedisCluster, RedisServer

INTERVAL = 0.02
BASELINE_SECONDS = 2.0
AFTER_ACKS = 10
"""acknowledged writes awaited after the step ended, before the writer stops"""
PRODUCTS = 20
USERS = 5000
ORDERS = 20000
SESSIONS = 5000
PASSWORD = "climb-bench-password"
TARGETS = {"1-2": 5.0, "2-3": 1.0, "3-4": 1.0, "4-5": 5.0}
LOGICAL = 64
_names = itertools.count()


@dataclass
class Run:
    gap: float
    baseline: float
    elapsed: dict[str, float]
    frozen_ms: float | None
    moved: str
    refused: int
    """503 answers to the writer"""
    other: dict[str, int] = field(default_factory=dict)
    """other non-2xx answers to the writer, by status"""
    writes: int = 0
    first_new: float = 0.0
    """seconds from the switch to the first write acknowledged by the new tier"""
    unauthorized: str = ""
    notes: list[str] = field(default_factory=list)


# --- shared ------------------------------------------------------------------------------------------------------


def seed_sql(users: int, orders: int) -> str:
    return (
        "INSERT INTO products (sku, name, price_cents, stock)"
        f" SELECT 'sku-' || g, 'Product ' || g, 100 * g, 1000000000 FROM generate_series(1, {PRODUCTS}) g;"
        "INSERT INTO users (email, name, password_hash)"
        f" SELECT 'u' || g || '@example.com', 'User ' || g, 'hash' FROM generate_series(1, {users}) g;"
        "INSERT INTO orders (user_id, total_cents)"
        f" SELECT 1 + g % {users}, 100 * (1 + g % {PRODUCTS}) FROM generate_series(1, {orders}) g;"
        "INSERT INTO order_items (order_id, product_id, quantity, price_cents)"
        f" SELECT id, 1 + id % {PRODUCTS}, 1, 100 * (1 + id % {PRODUCTS}) FROM orders"
    )


def order_attempt(port: int, users: int) -> Callable[[], tuple[int, str]]:
    """POST /orders for seeded user 1, 2, ... in turn, one item of one of the products."""
    counter = itertools.count()

    def attempt() -> tuple[int, str]:
        n = next(counter)
        body = {"user_id": 1 + n % users, "items": [{"product_id": 1 + n % PRODUCTS, "quantity": 1}]}
        answer = request(port, "POST", "/orders", body)
        return answer.status, answer.headers.get("retry-after", "")

    return attempt


def measure(
    writer: Steady,
    step: Callable[[], dict[str, Any]],
    extra: Sequence[Steady] = (),
) -> tuple[float, float, float, float, dict[str, Any]]:
    """Baseline, then `step()`; (gap, baseline gap, start, end, step's result). Stops the writers."""
    writer.wait_for(20, 0)
    calm = time.monotonic()
    time.sleep(BASELINE_SECONDS)
    start = time.monotonic()
    try:
        result = step()
        end = time.monotonic()
        writer.wait_for(AFTER_ACKS, end)
    finally:
        writer.stop()
        for other in extra:
            other.stop()
    acked = writer.acknowledged()
    gap = longest_gap(acked, start, end)
    calm_acks = sorted(t for t in acked if calm <= t <= start)  # not up to the first ack after the step's start
    baseline = max((b - a for a, b in itertools.pairwise(calm_acks)), default=0.0)
    return gap, baseline, start, end, result


def started_beside(old: Service, env: dict[str, str], log: Path) -> Service:
    """The new tier's service; the old one is stopped when it cannot start."""
    try:
        return Service(env, log)
    except BaseException:
        old.stop()
        raise


def first_after(writer: Steady, moment: float) -> float:
    """Seconds from `moment` to the first write sent after it and acknowledged."""
    return min(o.answered for o in writer.outcomes if o.sent >= moment and o.status in (200, 201)) - moment


def writer_counts(writer: Steady, start: float, end: float) -> tuple[int, int, dict[str, int]]:
    """(acknowledged writes, 503s, other failures by status) answered within the step's window."""
    window = [o for o in writer.outcomes if start <= o.answered <= end]
    refused = sum(1 for o in window if o.status == 503)
    other: dict[str, int] = {}
    for o in window:
        if o.status not in (200, 201, 503):
            other[str(o.status)] = other.get(str(o.status), 0) + 1
    return sum(1 for o in window if o.status in (200, 201)), refused, other


# --- 1 -> 2: copy-database ---------------------------------------------------------------------------------------


def step_1_2(servers: dict[str, Any], tmp: Path) -> Run:
    """Phase 1's in-pod database (the source) into phase 2's StatefulSet (the target, empty, migrated)."""
    from sample.migrations import migrate

    source, target = servers["pg-source"], servers["pg-target"]
    database = f"climb{next(_names)}"
    source_dsn, target_dsn = source.create_database(database), target.create_database(database)
    for dsn in (source_dsn, target_dsn):
        asyncio.run(migrate(dsn))
    source.sql(seed_sql(USERS, ORDERS), database)
    password = tmp / "db-password"
    password.write_text("bench\n")  # trust auth on loopback: carried, not checked
    old = Service({"DATABASE_URL": source_dsn, "DATABASE_PASSWORD_FILE": str(password)}, tmp / f"{database}-old.log")
    new = started_beside(
        old, {"DATABASE_URL": target_dsn, "DATABASE_PASSWORD_FILE": str(password)}, tmp / f"{database}-new.log"
    )
    front = Front(old.port)
    job = {"DATABASE_URL": target_dsn, "CLIMB_SOURCE_DATABASE_URL": source_dsn, "DATABASE_PASSWORD_FILE": str(password)}
    try:
        writer = Steady("orders", INTERVAL, order_attempt(front.port, USERS))

        def step() -> dict[str, Any]:
            copied = climb(job, "copy-database")
            switched = front.switch(new.port)
            return {"copy": copied, "switched": switched}

        gap, baseline, start, end, result = measure(writer, step)
    finally:
        front.close()
        new.stop()
        old.stop()
    copied = result["copy"]
    tables = copied.report["tables"]
    writes, refused, other = writer_counts(writer, start, end)
    return Run(
        gap=gap,
        baseline=baseline,
        elapsed={"copy-database": copied.seconds},
        frozen_ms=copied.report["frozen_ms"],
        moved=", ".join(f"{name} {t['copied']}" for name, t in tables.items()),
        refused=refused,
        other=other,
        writes=writes,
        first_new=first_after(writer, result["switched"]),
    )


# --- 2 -> 3: Patroni adopts the phase-2 data directory -----------------------------------------------------------


def lock_taken(log: str) -> float | None:
    """Seconds from Patroni's first log line to its "promoted self to leader" line, None if not found."""
    import datetime
    import re

    stamps = []
    for line in log.splitlines():
        found = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) [A-Z]+: ", line)
        if found:
            stamps.append((datetime.datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f"), line))
    promoted = [when for when, line in stamps if "promoted self to leader" in line]
    return (promoted[0] - stamps[0][0]).total_seconds() if promoted else None


def step_2_3(servers: dict[str, Any], tmp: Path) -> Run:
    """Phase 2's single server stopped, its data directory run by member postgres-0 of phase 3's
    Patroni group (alone, no group in the DCS yet): it starts as a secondary, takes the leader lock
    and promotes itself. The service's database goes through a TCP proxy that plays `postgres-rw`."""
    from sample.migrations import migrate

    from bench.climb_patroni import PASSWORDS, SYSID, TIMELINE, Phase2
    from testsupport.process import wait_for
    from testsupport.tcp_proxy import TcpProxy

    plane = servers["control-plane"].plane
    namespace = f"climb-bench-{next(_names)}"
    phase2 = Phase2(plane, namespace)
    password = tmp / f"{namespace}-db-password"
    password.write_text(PASSWORDS.app + "\n")
    rw = TcpProxy(phase2.port)  # `postgres-rw`: the phase-2 pod, then whichever member leads
    service = front = None
    try:
        direct = phase2.dsn().replace("@", f":{PASSWORDS.app}@", 1)
        asyncio.run(migrate(direct))
        phase2.primary.execute(seed_sql(USERS, ORDERS))
        group = phase2.prepare_phase3()
        leader = group.members[0]
        service = Service(
            {"DATABASE_URL": phase2.dsn(rw.port), "DATABASE_PASSWORD_FILE": str(password)}, tmp / f"{namespace}.log"
        )
        front = Front(service.port)
        writer = Steady("orders", INTERVAL, order_attempt(front.port, USERS))

        def step() -> dict[str, Any]:
            stopping = time.monotonic()
            phase2.stop()
            stopped = time.monotonic()
            phase2.hand_over()
            launched = time.monotonic()
            rw.retarget(leader.port)  # the endpoint is member 0 from its start: refused until it listens
            leader.start()
            try:
                wait_for(lambda: group.leader() is leader, 90, f"{leader.name} leading", interval=0.05)
            except TimeoutError as error:
                raise RuntimeError(f"{error}; its log:\n{leader.log()[-6000:]}") from error
            led = time.monotonic()
            return {"stop": stopped - stopping, "launched": launched, "leader": led - launched}

        gap, baseline, start, end, result = measure(writer, step)
        sysid, timeline = str(leader.value(SYSID)), leader.value(TIMELINE)
        logged = lock_taken(leader.log())
    finally:
        if front is not None:
            front.close()
        if service is not None:
            service.stop()
        rw.close()
        phase2.close()
    writes, refused, other = writer_counts(writer, start, end)
    notes = [] if sysid == phase2.sysid else [f"UNEXPECTED: system identifier {phase2.sysid} -> {sysid}"]
    return Run(
        gap=gap,
        baseline=baseline,
        elapsed={
            "pod stop": result["stop"],
            "Patroni start -> leader": result["leader"],
            "Patroni log, 1st line -> promoted": float("nan") if logged is None else logged,
        },
        frozen_ms=None,
        moved=f"nothing: directory adopted, system id kept ({sysid == phase2.sysid}), timeline {timeline}",
        refused=refused,
        other=other,
        writes=writes,
        first_new=first_after(writer, result["launched"]),
        notes=notes,
    )


# --- 3 -> 4: move-sessions ---------------------------------------------------------------------------------------


def session_key(token: str) -> str:
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Logins:
    """The writer's logins through the front: each session token and when it was acknowledged."""

    port: int
    users: int
    created: list[tuple[str, float]] = field(default_factory=list)

    def attempt(self) -> tuple[int, str]:
        n = len(self.created) + random.randrange(self.users)
        answer = request(
            self.port, "POST", "/sessions", {"email": f"u{1 + n % self.users}@example.com", "password": PASSWORD}
        )
        if answer.status == 201:
            cookie = answer.headers.get("set-cookie", "")
            token = cookie.split("sid=", 1)[1].split(";", 1)[0]
            self.created.append((token, time.monotonic()))
        return answer.status, answer.headers.get("retry-after", "")


@dataclass
class Reader:
    """GET /me through the front, alternately with a seeded session and one the writer created; notes
    which kind and, for the writer's, when it was created."""

    port: int
    seeded: list[str]
    logins: Logins
    turn: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]

    def attempt(self) -> tuple[int, str]:
        if next(self.turn) % 2 == 0 or not self.logins.created:
            token, note = random.choice(self.seeded), "seeded"
        else:
            token, created = random.choice(self.logins.created)
            note = f"writer@{created}"
        answer = request(self.port, "GET", "/me", cookie=f"sid={token}")
        return answer.status, note


def step_3_4(servers: dict[str, Any], tmp: Path) -> Run:
    """Phase 3's standalone Redis into phase 4's Redis Cluster; one Postgres behind both tiers."""
    standalone: RedisServer = servers["redis"]
    cluster: RedisCluster = servers["redis-cluster"]
    dsn: str = servers["pg-sessions-dsn"]
    standalone.command("FLUSHALL")
    cluster.flushall()
    import redis

    seeded = [secrets.token_urlsafe(32) for _ in range(SESSIONS)]
    with redis.Redis(port=standalone.port) as client, client.pipeline(transaction=False) as pipe:
        for n, token in enumerate(seeded):
            pipe.set(session_key(token), str(1 + n % USERS), ex=1800 + n % 1800)
        pipe.execute()
    env = {
        "DATABASE_URL": dsn,
        "CACHE_ENABLED": "true",
        "SESSIONS_ENABLED": "true",
        "SESSION_TTL_SECONDS": "3600",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_ALGORITHM": "sliding_window",
        "RATE_LIMIT_IP_LIMIT": "1000000",
        "RATE_LIMIT_USER_LIMIT": "1000000",
    }
    name = f"sessions{next(_names)}"
    old = Service({**env, "REDIS_URL": standalone.url}, tmp / f"{name}-old.log")
    new = started_beside(old, {**env, "REDIS_URL": cluster.seed_url, "REDIS_MODE": "cluster"}, tmp / f"{name}-new.log")
    front = Front(old.port)
    job = {
        "DATABASE_URL": "postgresql://app@127.0.0.1:1/unused",  # move-sessions never connects to it
        "REDIS_URL": cluster.seed_url,
        "REDIS_MODE": "cluster",
        "CLIMB_SOURCE_REDIS_URL": standalone.url,
    }
    try:
        logins = Logins(front.port, USERS)
        writer = Steady("logins", INTERVAL, logins.attempt)
        reader = Steady("me", INTERVAL, Reader(front.port, seeded, logins).attempt)

        def step() -> dict[str, Any]:
            first = climb(job, "move-sessions")
            switched = front.switch(new.port)
            final = climb(job, "move-sessions", "--final")
            return {"first": first, "switched": switched, "final": final}

        gap, baseline, start, end, result = measure(writer, step, [reader])
    finally:
        front.close()
        new.stop()
        old.stop()
    first, final, switched = result["first"], result["final"], result["switched"]
    writes, refused, other = writer_counts(writer, start, end)
    moved = {kind: first.report[kind]["copied"] + final.report[kind]["copied"] for kind in ("sessions", "ratelimits")}
    between = [o for o in reader.outcomes if switched <= o.sent and o.answered <= final.ended]
    denied = [o for o in between if o.status == 401]
    notes = []
    if stray := [o for o in reader.outcomes if o.status == 401 and o not in denied]:
        notes.append(f"UNEXPECTED: {len(stray)} 401s outside switch..--final")
    if seeded_denied := sum(1 for o in denied if o.note == "seeded"):
        notes.append(f"UNEXPECTED: {seeded_denied} 401s with a seeded (first-pass) session")
    if any(float(o.note.split("@", 1)[1]) < first.started for o in denied if o.note != "seeded"):
        notes.append("UNEXPECTED: a 401 for a session created before the first pass started")
    served = [o.answered for o in reader.outcomes if o.status == 200]
    notes.append(f"authenticated GET /me: longest gap between 200s {fmt(longest_gap(served, start, end))}")
    reads_failed = sum(1 for o in reader.outcomes if o.status not in (200, 401))
    if reads_failed:
        notes.append(f"{reads_failed} reads answered neither 200 nor 401")
    return Run(
        gap=gap,
        baseline=baseline,
        elapsed={"move-sessions": first.seconds, "--final": final.seconds},
        frozen_ms=None,
        moved=f"sessions {moved['sessions']} ({final.report['sessions']['copied']} by --final),"
        f" ratelimits {moved['ratelimits']}",
        refused=refused,
        other=other,
        writes=writes,
        first_new=first_after(writer, switched),
        unauthorized=f"{len(denied)}/{len(between)}",
        notes=notes,
    )


# --- 4 -> 5: adopt-shards ----------------------------------------------------------------------------------------


def step_4_5(servers: dict[str, Any], tmp: Path) -> Run:
    """Phase 4's main group (every user and order) into phase 5's shard groups."""
    from sample.migrations import migrate
    from sample.shards import ShardMap

    main: PostgresServer = servers["pg-main"]
    groups: list[PostgresServer] = servers["pg-groups"]
    database = f"adopt{next(_names)}"
    main_dsn = main.create_database(database)
    group_dsns = [server.create_database(database) for server in groups]
    asyncio.run(migrate(main_dsn))  # phase 4's schema: users and orders in main
    main.sql(seed_sql(USERS, ORDERS), database)
    names = [f"pg-shard-{i}" for i in range(len(groups))]
    shard_map = ShardMap(1, LOGICAL, tuple(names), tuple(names[i % len(names)] for i in range(LOGICAL)))
    sharded = {
        "SHARD_GROUPS": ",".join(names),
        "SHARD_MAP": json.dumps(shard_map.to_dict()),
        "ADMIN_TOKEN": "bench-admin-token",
        **{f"SHARD_{i}_URL": dsn for i, dsn in enumerate(group_dsns)},
    }
    old = Service({"DATABASE_URL": main_dsn}, tmp / f"{database}-old.log")
    # phase 5's migration Job, while phase 4 serves: the sharded schema beside main's tables, the groups', the map
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    migrated = subprocess.run(
        [sys.executable, "-m", "sample", "migrate"],
        env={**base, "DATABASE_URL": main_dsn, **sharded},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if migrated.returncode != 0:
        old.stop()
        raise RuntimeError(f"sample migrate (phase 5) failed:\n{migrated.stderr[-4000:]}")
    new = started_beside(old, {"DATABASE_URL": main_dsn, **sharded}, tmp / f"{database}-new.log")
    front = Front(old.port)
    job = {"DATABASE_URL": main_dsn, **sharded}
    try:
        writer = Steady("orders", INTERVAL, order_attempt(front.port, USERS))

        def step() -> dict[str, Any]:
            adopted = climb(job, "adopt-shards")
            switched = front.switch(new.port)
            finished = climb(job, "adopt-shards", "--finish")
            return {"adopt": adopted, "switched": switched, "finish": finished}

        gap, baseline, start, end, result = measure(writer, step)
    finally:
        front.close()
        new.stop()
        old.stop()
    adopted, finished = result["adopt"], result["finish"]
    writes, refused, other = writer_counts(writer, start, end)
    copied: dict[str, int] = {}
    for per_group in adopted.report["copied"].values():
        for table, rows in per_group.items():
            copied[table] = copied.get(table, 0) + rows
    caught: dict[str, int] = {}
    for per_group in adopted.report["caught_up"].values():
        for table, rows in per_group.items():
            caught[table] = caught.get(table, 0) + rows
    return Run(
        gap=gap,
        baseline=baseline,
        elapsed={"adopt-shards": adopted.seconds, "--finish": finished.seconds},
        frozen_ms=adopted.report["frozen_ms"],
        moved=", ".join(f"{t} {copied[t]} (+{caught.get(t, 0)} caught up)" for t in copied),
        refused=refused,
        other=other,
        writes=writes,
        first_new=first_after(writer, result["switched"]),
    )


# --- servers and the table ---------------------------------------------------------------------------------------

STEPS: dict[str, tuple[str, Callable[[dict[str, Any], Path], Run]]] = {
    "1-2": ("copy-database", step_1_2),
    "2-3": ("phase-2 pod stopped, Patroni's postgres-0 adopts its directory", step_2_3),
    "3-4": ("move-sessions, switch, --final", step_3_4),
    "4-5": ("adopt-shards, switch, --finish", step_4_5),
}


def start_servers(steps: list[str], started: list[Any]) -> dict[str, Any]:
    """The servers the chosen steps need, each appended to `started` as soon as it runs."""
    servers: dict[str, Any] = {}

    def keep(name: str, server: Any) -> Any:
        started.append(server)
        servers[name] = server
        return server

    if "1-2" in steps:
        keep("pg-source", PostgresServer.primary())
        keep("pg-target", PostgresServer.primary())
    if "2-3" in steps:
        from bench.climb_patroni import Plane

        keep("control-plane", Plane())  # slow to start: once for every run
    if "3-4" in steps:
        postgres = keep("pg-sessions", PostgresServer.primary())
        dsn = postgres.create_database("sessions")
        from sample.migrations import migrate
        from sample.repo.users import hash_password

        asyncio.run(migrate(dsn))
        hashed = asyncio.run(hash_password(PASSWORD))  # one scrypt hash: every seeded user can log in
        postgres.sql(seed_sql(USERS, 0).replace("'hash'", f"'{hashed}'"), "sessions")
        servers["pg-sessions-dsn"] = dsn
        keep("redis", RedisServer.start())
        keep("redis-cluster", RedisCluster.start(masters=3))
    if "4-5" in steps:
        keep("pg-main", PostgresServer.primary())
        servers["pg-groups"] = [PostgresServer.primary() for _ in range(2)]
        started.extend(servers["pg-groups"])
    return servers


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def table(results: dict[str, list[Run]]) -> None:
    print(
        "\n| step | target | write gap p50 | write gap max | baseline gap max | switch -> 1st write on new p50"
        " | command(s) p50 | frozen_ms p50 | writes / 503s in window p50 | moved (last run)"
        " | 401s / reads, switch to end of --final |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for step, runs in results.items():
        gaps = [r.gap for r in runs]
        verdict = "met" if max(gaps) < TARGETS[step] else "MISSED"
        commands = ", ".join(f"{name} {median([r.elapsed[name] for r in runs]):.2f} s" for name in runs[0].elapsed)
        frozen = [r.frozen_ms for r in runs if r.frozen_ms is not None]
        frozen_text = f"{median(frozen):.0f}" if frozen else "no freeze"
        writes = f"{median([r.writes for r in runs]):.0f} / {median([r.refused for r in runs]):.0f}"
        denied = ", ".join(r.unauthorized for r in runs) if runs[0].unauthorized else "-"
        print(
            f"| {step.replace('-', ' -> ')} ({STEPS[step][0]}) | < {TARGETS[step]:.0f} s ({verdict}) |"
            f" {fmt(median(gaps))} | {fmt(max(gaps))} | {fmt(max(r.baseline for r in runs))} |"
            f" {fmt(median([r.first_new for r in runs]))} | {commands} | {frozen_text} | {writes} |"
            f" {runs[-1].moved} | {denied} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of: " + ", ".join(STEPS))
    args = parser.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := [s for s in steps if s not in STEPS]:
        parser.error(f"--steps: unknown {unknown}, allowed: {', '.join(STEPS)}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-climb-"))
    started: list[Any] = []
    results: dict[str, list[Run]] = {}
    began = time.monotonic()
    try:
        servers = start_servers(steps, started)
        for step in steps:
            for n in range(args.runs):
                run = STEPS[step][1](servers, tmp)
                results.setdefault(step, []).append(run)
                print(
                    f"{step} run {n + 1}: write gap {fmt(run.gap)} (baseline {fmt(run.baseline)}),"
                    f" {', '.join(f'{k} {v:.2f} s' for k, v in run.elapsed.items())},"
                    f" frozen_ms {run.frozen_ms}, writes {run.writes}, 503s {run.refused}, other {run.other},"
                    f" switch -> 1st write on new {fmt(run.first_new)}, 401s/reads {run.unauthorized or '-'};"
                    f" moved {run.moved}" + "".join(f"; {note}" for note in run.notes),
                    flush=True,
                )
    finally:
        for server in reversed(started):
            server.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nclimbing in place on loopback, {args.runs} runs per step, writer every {INTERVAL * 1000:.0f} ms,"
        f" {os.cpu_count()} CPUs shared by every server, both service tiers and the command;"
        f" seeded {USERS} users, {ORDERS} orders (1 -> 2, 4 -> 5), {SESSIONS} sessions (3 -> 4);"
        f" whole run {time.monotonic() - began:.0f} s"
    )
    table(results)
    print(
        "\nThe switch here is a TCP front retargeted the moment the command exits, to a new tier already running:"
        " a real cluster adds the rollout's own time (new pods pulled, started, passing readiness) to the"
        " 1 -> 2 and 4 -> 5 freezes, which this does not measure."
    )


if __name__ == "__main__":
    main()
