"""`sample climb move-sessions` (3 -> 4): sessions and rate-limit state from a real standalone redis-server into a
real 3-master Redis Cluster, with a writer running, after SIGKILLs at every step, and without resurrecting a
session deleted on the cluster. The command always runs as `python -m sample climb move-sessions`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sample.climb_sessions import COPIED, SOURCE_ALLOWED, TARGET_ALLOWED, move_sessions, source_redis_url
from sample.config import ConfigError, load_settings
from sample_helpers import Client, Postgres, Service, reset, seed_products, signup_and_login

from testsupport.redis import RedisCluster, RedisServer

NO_DATABASE = "postgresql://app@127.0.0.1:1/unused"  # the climb's env has one; move-sessions never connects to it
STEPS = ("start", "read", "restored", "recorded", "reconciled", "verified")


@pytest.fixture
def source(redis_server: RedisServer) -> Iterator[redis.Redis]:
    redis_server.command("FLUSHALL")
    client = redis.Redis(port=redis_server.port)
    yield client
    client.close()


@pytest.fixture
def target(redis_cluster: RedisCluster) -> Iterator[redis.RedisCluster]:
    redis_cluster.flushall()
    client = redis.RedisCluster.from_url(redis_cluster.seed_url)
    yield client
    client.close()


def climb_env(redis_server: RedisServer, redis_cluster: RedisCluster) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return {
        **base,
        "DATABASE_URL": NO_DATABASE,
        "REDIS_URL": redis_cluster.seed_url,
        "REDIS_MODE": "cluster",
        "CLIMB_SOURCE_REDIS_URL": redis_server.url,
    }


def argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sample", "climb", "move-sessions", *args]


def climb(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Runs the command to completion; its report."""
    done = subprocess.run(argv(*args), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def climb_killed(env: dict[str, str], step: str, nth: int, *args: str) -> None:
    """Runs the command and SIGKILLs it as soon as its log shows `step` the `nth` time."""
    proc = subprocess.Popen(argv(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    seen, lines = 0, []
    for line in proc.stderr:
        lines.append(line)
        if json.loads(line).get("step") == step:
            seen += 1
            if seen == nth:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    output = proc.stdout.read()
    proc.stdout.close()
    proc.stderr.close()
    if output and step == STEPS[-1]:
        return  # its last step logged, it printed the report before the SIGKILL arrived: a finished run
    assert proc.returncode == -signal.SIGKILL, f"not killed at {step} #{nth}:\n{''.join(lines)}{output}"
    assert output == ""  # no report: it did not finish


def session_key(token: str) -> str:
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


def seed(source: redis.Redis, prefix: str, sessions: int, ratelimits: int, cache: int) -> None:
    """Sessions with TTLs from 10 to 30 minutes, sliding-window hashes, cache entries (not to be copied)."""
    pipe = source.pipeline(transaction=False)
    for n in range(sessions):
        pipe.set(session_key(f"{prefix}-{n}"), str(1000 + n), ex=600 + n % 1200)
    for n in range(ratelimits):
        key = f"ratelimit:sliding_window:ip:10.{prefix}.0.{n}"
        pipe.hset(key, mapping={"idx": 100, "cur": n, "prev": 1})
        pipe.pexpire(key, 120_000)
    for n in range(cache):
        pipe.set(f"product:v2:{prefix}{n}", "cached", ex=60)
    pipe.execute()


def keys_of(client: redis.Redis | redis.RedisCluster, pattern: str) -> set[str]:
    if isinstance(client, redis.RedisCluster):
        return {key.decode() for key in client.scan_iter(match=pattern, target_nodes=redis.RedisCluster.ALL_NODES)}
    return {key.decode() for key in client.scan_iter(match=pattern)}


def value(client: redis.Redis | redis.RedisCluster, key: str) -> Any:
    return client.get(key) if key.startswith("session:") else client.hgetall(key)


def assert_all_accounted_for(source: redis.Redis, target: redis.RedisCluster, absent: set[str] = frozenset()) -> None:
    """Every session and rate-limit key of the standalone is on the cluster with its value and remembered, except
    `absent` (logged out on either side after their copy); no cache entry was copied."""
    moved = keys_of(source, "session:*") | keys_of(source, "ratelimit:*")
    remembered = {key.decode() for key in target.hkeys(COPIED)}
    assert moved - absent <= remembered
    for key in sorted(moved - absent):
        assert value(target, key) == value(source, key), key
        assert target.pttl(key) > 0, key
    assert not any(target.exists(key) for key in absent)
    assert keys_of(target, "product:*") == set()


# --- (a) with a writer running, through the service's HTTP API ----------------------------------------------------


class Writer(threading.Thread):
    """Signs up and logs in one user after the other on the phase-3 web, each followed by rate-limited requests;
    every tenth round also uses an earlier session (sliding its TTL on the standalone)."""

    def __init__(self, service: Service) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.acked: list[tuple[str, str, float]] = []  # (token, email, when acknowledged)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            anonymous = self.service.client()
            n = 0
            while not self.stopping.is_set():
                email = f"writer{n}@example.com"
                client, _ = signup_and_login(self.service, email)
                self.acked.append((client.cookies["sid"], email, time.monotonic()))
                assert client.get("/products").status == 200
                assert anonymous.get("/products/1").status == 200  # a cache entry, and the IP tier's hash
                if n % 10 == 9:
                    earlier = Client(self.service.port, {"sid": self.acked[n // 2][0]})
                    assert earlier.get("/me").status == 200
                n += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def wait_for(self, count: int) -> None:
        while len(self.acked) < count:
            assert self.error is None and self.is_alive(), self.error
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        assert self.error is None, self.error


def test_every_acknowledged_session_survives_the_climb_with_its_ttl(
    postgres: Postgres,
    redis_server: RedisServer,
    redis_cluster: RedisCluster,
    source: redis.Redis,
    target: redis.RedisCluster,
) -> None:
    reset(postgres, redis_server)
    seed_products(postgres, 3)
    env = {
        "DATABASE_URL": postgres.dsn,
        "CACHE_ENABLED": "true",
        "SESSIONS_ENABLED": "true",
        "SESSION_TTL_SECONDS": "60",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_ALGORITHM": "sliding_window",
        "RATE_LIMIT_IP_LIMIT": "1000000",
        "RATE_LIMIT_USER_LIMIT": "1000000",
    }
    command = climb_env(redis_server, redis_cluster)
    old = Service({**env, "REDIS_URL": redis_server.url})
    new: Service | None = None
    writer = Writer(old)
    try:
        writer.start()
        writer.wait_for(10)
        first = climb(command)  # pass 1, the phase-3 web serving throughout
        after_first = len(writer.acked)
        writer.wait_for(after_first + 10)
        new = Service({**env, "REDIS_URL": redis_cluster.seed_url, "REDIS_MODE": "cluster"})  # the rollout
        writer.stop()
        old.stop()  # the phase-3 web is gone
        acked = list(writer.acked)
        # the gap: what was created on the standalone after pass 1 is not on the cluster before --final
        created_meanwhile = [session_key(token) for token, _, _ in acked[after_first:]]
        assert created_meanwhile and not any(target.exists(key) for key in created_meanwhile)
        keys = [session_key(token) for token, _, _ in acked]
        read = time.monotonic()
        before = {key: source.pttl(key) for key in keys}
        final = climb(command, "--final")
        final_done = time.monotonic()
        after = {key: target.pttl(key) for key in keys}
        elapsed_ms = (time.monotonic() - read) * 1000
        assert_all_accounted_for(source, target)  # rate-limit hashes included, before the new web touches them
        for key in keys:  # the remaining TTL, not a fresh one: within the time the final pass took
            assert before[key] - elapsed_ms - 500 <= after[key] <= before[key] + 500, (key, before[key], after[key])
        for token, email, _ in acked:
            me = Client(new.port, {"sid": token}).get("/me")
            assert (me.status, me.json()["email"]) == (200, email)
        slid = first["sessions"]["copied"] > 0 and final["sessions"]["refreshed"] > 0
        assert slid  # sessions used on the phase-3 web after pass 1 got their renewed TTL on the cluster
        assert first["ratelimits"]["copied"] > 0 and final["ratelimits"]["refreshed"] > 0
        assert final["sessions"]["copied"] >= len(created_meanwhile)
        assert final["sessions"]["on_target"] == final["sessions"]["remembered"] == len(keys)
        assert first["not_copied"]["keys"] >= 1 and final["not_copied"]["keys"] >= 1  # the cache entry
        gap_ms = (final_done - acked[after_first][2]) * 1000
        print(
            f"\nclimb: {len(acked)} sessions acknowledged, pass 1 copied {first['sessions']['copied']} sessions and"
            f" {first['ratelimits']['copied']} rate-limit keys in {first['elapsed_ms']} ms; --final copied"
            f" {final['sessions']['copied']}, refreshed {final['sessions']['refreshed']} sessions and"
            f" {final['ratelimits']['refreshed']} rate-limit keys in {final['elapsed_ms']} ms; the first session"
            f" created after pass 1 was missing on the cluster for {gap_ms:.0f} ms"
        )
    finally:
        if writer.is_alive():
            writer.stopping.set()
            writer.join(timeout=30)
        old.stop()
        if new is not None:
            new.stop()


# --- (b) crash injection: SIGKILL at every step, then run again ----------------------------------------------------


def move(redis_server: RedisServer, redis_cluster: RedisCluster, *, final: bool, batch: int = 100) -> dict[str, Any]:
    """A run to completion in this process (the code the command runs, without the interpreter's start)."""
    return asyncio.run(move_sessions(redis_server.url, redis_cluster.seed_url, "cluster", final=final, batch=batch))


@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_any_step_completes_when_run_again(
    redis_server: RedisServer, redis_cluster: RedisCluster, source: redis.Redis, target: redis.RedisCluster, step: str
) -> None:
    """Pass 1 is killed at `step` and run again; then --final is killed at `step` and run again."""
    env = climb_env(redis_server, redis_cluster)
    nth = 2 if step in ("read", "restored", "recorded") else 1  # the copy steps: mid-way, one batch in
    seed(source, "1", sessions=400, ratelimits=40, cache=20)
    climb_killed(env, step, nth, "--batch", "100")
    first = move(redis_server, redis_cluster, final=False)
    assert_all_accounted_for(source, target)
    assert first["sessions"]["scanned"] == 400
    assert sum(first["sessions"][n] for n in ("already_copied", "copied", "adopted", "skipped_expired")) == 400

    seed(source, "2", sessions=300, ratelimits=10, cache=5)  # created on the standalone meanwhile
    for n in range(40):  # used on the standalone after pass 1: longer TTLs there
        source.expire(session_key(f"1-{n}"), 1800)
    logged_out = {session_key(f"1-{n}") for n in range(40, 50)}
    source.delete(*logged_out)  # on the standalone, after their copy
    climb_killed(env, step, nth, "--batch", "100", "--final")
    final = move(redis_server, redis_cluster, final=True)
    assert_all_accounted_for(source, target, absent=logged_out)
    assert all(target.ttl(session_key(f"1-{n}")) > 1700 for n in range(40))
    counts = final["sessions"]
    assert counts["revoked"] in (0, 10) and counts["gone_on_target"] == 10  # 0: the killed run had revoked them
    assert counts["scanned"] == 690
    assert sum(counts[n] for n in ("already_copied", "copied", "adopted", "skipped_expired")) == 690
    assert counts["remembered"] == 700 and counts["on_target"] == 690


def test_a_copy_a_crash_left_unremembered_is_adopted_and_the_clusters_state_kept(
    redis_server: RedisServer, redis_cluster: RedisCluster, source: redis.Redis, target: redis.RedisCluster
) -> None:
    """Killed between RESTORE and remembering (made exact here): --final keeps what is on the cluster."""
    seed(source, "3", sessions=20, ratelimits=5, cache=0)
    for key in keys_of(source, "session:*") | keys_of(source, "ratelimit:*"):
        target.restore(key, source.pttl(key), source.dump(key))
    newer = "ratelimit:sliding_window:ip:10.3.0.1"
    target.hset(newer, "cur", 99)  # the phase-4 web counted on the cluster since
    report = move(redis_server, redis_cluster, final=True)
    assert (report["sessions"]["adopted"], report["ratelimits"]["adopted"]) == (20, 5)
    assert report["sessions"]["verified"] == 20
    assert target.hget(newer, "cur") == b"99"
    for key in keys_of(source, "session:*"):
        assert target.get(key) == source.get(key)
    assert len(target.hkeys(COPIED)) == 25


# --- (c) no resurrection -------------------------------------------------------------------------------------------


def test_a_session_deleted_on_the_cluster_after_pass_1_stays_deleted(
    redis_server: RedisServer, redis_cluster: RedisCluster, source: redis.Redis, target: redis.RedisCluster
) -> None:
    env = climb_env(redis_server, redis_cluster)
    seed(source, "4", sessions=50, ratelimits=5, cache=3)
    first = climb(env)
    assert first["sessions"]["copied"] == 50
    logged_out_on_cluster = [session_key(f"4-{n}") for n in range(5)]
    target.delete(*logged_out_on_cluster)  # DEL, as POST /sessions/logout on the phase-4 web does
    used_on_cluster = session_key("4-5")
    target.expire(used_on_cluster, 1200)  # slid by the phase-4 web
    source.delete(used_on_cluster)  # and gone on the standalone: not revoked, it is in use on the cluster
    final = climb(env, "--final")
    assert not any(target.exists(key) for key in logged_out_on_cluster)
    assert target.exists(used_on_cluster)
    assert (final["sessions"]["copied"], final["sessions"]["revoked"], final["sessions"]["gone_on_target"]) == (0, 0, 5)
    assert all(source.exists(key) for key in logged_out_on_cluster)  # the standalone still has them
    again = climb(env, "--final")  # idempotent
    assert (again["sessions"]["copied"], again["sessions"]["refreshed"], again["sessions"]["revoked"]) == (0, 0, 0)
    assert not any(target.exists(key) for key in logged_out_on_cluster)
    assert again["sessions"]["gone_on_target"] == 5


# --- (d) configuration errors --------------------------------------------------------------------------------------


def secret(tmp_path: Path, text: str) -> str:
    path = tmp_path / "password"
    path.write_text(text)
    return str(path)


def problem(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        source_redis_url(env, load_settings(env))
    return str(raised.value)


def test_the_source_gets_the_password_file_s_password(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": NO_DATABASE,
        "REDIS_URL": "redis://redis:6379/0",
        "REDIS_MODE": "cluster",
        "REDIS_PASSWORD_FILE": secret(tmp_path, "p@ss\n"),
        "CLIMB_SOURCE_REDIS_URL": "redis://redis-standalone:6379/0",
    }
    assert source_redis_url(env, load_settings(env)) == "redis://:p%40ss@redis-standalone:6379/0"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, f"CLIMB_SOURCE_REDIS_URL: not set, allowed: {SOURCE_ALLOWED}"),
        ("  ", f"CLIMB_SOURCE_REDIS_URL: not set, allowed: {SOURCE_ALLOWED}"),
        ("http://redis:6379", f"CLIMB_SOURCE_REDIS_URL: got 'http://redis:6379', allowed: {SOURCE_ALLOWED}"),
        (
            "redis://:hunter2@old:6379/0",
            "CLIMB_SOURCE_REDIS_URL: got 'redis://:***@old:6379/0', allowed: a URL without a password while"
            " REDIS_PASSWORD_FILE is set (one or the other)",
        ),
        (
            "redis://redis:6379/0",
            f"CLIMB_SOURCE_REDIS_URL: got 'redis://redis:6379/0', allowed: {SOURCE_ALLOWED} (it is REDIS_URL)",
        ),
    ],
)
def test_a_bad_source_names_the_variable_the_value_and_what_is_allowed(
    tmp_path: Path, source: str | None, message: str
) -> None:
    env = {
        "DATABASE_URL": NO_DATABASE,
        "REDIS_URL": "redis://redis:6379/0",
        "REDIS_PASSWORD_FILE": secret(tmp_path, "pw"),
    }
    if source is not None:
        env["CLIMB_SOURCE_REDIS_URL"] = source
    assert problem(env) == f"invalid environment:\n  {message}"


def test_without_redis_url_both_variables_are_named() -> None:
    env = {"DATABASE_URL": NO_DATABASE, "CLIMB_SOURCE_REDIS_URL": "ftp://old"}
    assert problem(env) == (
        "invalid environment:\n"
        f"  REDIS_URL: not set, allowed: {TARGET_ALLOWED} (required by sample climb move-sessions)\n"
        f"  CLIMB_SOURCE_REDIS_URL: got 'ftp://old', allowed: {SOURCE_ALLOWED}"
    )


def test_the_command_exits_2_with_the_message_and_touches_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env |= {
        "DATABASE_URL": NO_DATABASE,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "REDIS_PASSWORD_FILE": secret(tmp_path, "x"),
    }
    done = subprocess.run(argv("--final"), env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "sample climb move-sessions: invalid environment:\n"
        f"  CLIMB_SOURCE_REDIS_URL: not set, allowed: {SOURCE_ALLOWED}\n"
    )


def test_an_unreachable_server_exits_1_and_says_it_resumes(redis_cluster: RedisCluster) -> None:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env |= {"DATABASE_URL": NO_DATABASE, "REDIS_URL": redis_cluster.seed_url, "REDIS_MODE": "cluster"}
    env["CLIMB_SOURCE_REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    done = subprocess.run(argv(), env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    last = done.stderr.splitlines()[-1]
    assert last.startswith("sample climb move-sessions: ConnectionError: ") and last.endswith(
        "(run it again: it resumes)"
    )
