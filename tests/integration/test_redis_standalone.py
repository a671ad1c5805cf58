"""The phase-3 session store, for real: the rendered redis.conf started by node-start.sh on loopback."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from components.redis import RUN_AS, SCRIPTS, RedisSpec, render_conf
from testsupport.process import LOOPBACK, ServerProcess, free_port, owned_by, require_binary, write_secret

pytestmark = pytest.mark.integration

PASSWORD = "session 'store' pass"
Start = Callable[[RedisSpec], redis.Redis]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start (or restart, same port and directory) the session store as its pod does: as the pod's uid,
    in a directory it owns, the password from a root-owned file of its group."""
    require_binary("redis-server", "Debian: apt-get install redis-server")
    folder = owned_by(RUN_AS, Path(tempfile.mkdtemp(prefix="kit-redis-")))
    port = free_port()
    processes: list[ServerProcess] = []

    def client() -> redis.Redis:
        return redis.Redis(LOOPBACK, port, password=PASSWORD, decode_responses=True)

    def answers() -> bool:
        try:
            with client() as probe:
                return bool(probe.ping())
        except redis.RedisError:
            return False

    def run(spec: RedisSpec) -> redis.Redis:
        for process in processes:
            process.stop()
        conf = folder / "redis.conf"
        conf.write_text(render_conf(spec))
        password = write_secret(folder / "password", PASSWORD, RUN_AS)
        env = {"REDIS_CONFIG": str(conf), "REDIS_RUN_DIR": str(folder), "REDIS_PASSWORD_FILE": str(password)}
        argv = ["sh", str(SCRIPTS / "node-start.sh"), "--bind", LOOPBACK, "--port", str(port)]
        log = folder / "redis.log"
        processes.append(ServerProcess(argv, ready=answers, log=log, env=env, cwd=folder, uid=RUN_AS))
        return client()

    yield run
    for process in processes:
        process.stop()
    shutil.rmtree(folder)


def test_the_password_is_required_and_the_rendered_settings_apply(start: Start) -> None:
    client = start(RedisSpec(enabled=True))
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(LOOPBACK, client.connection_pool.connection_kwargs["port"]).ping()
    settings = {key: client.config_get(key)[key] for key in ("maxmemory", "maxmemory-policy", "save", "appendonly")}
    assert settings == {
        "maxmemory": str(192 * 2**20),
        "maxmemory-policy": "volatile-lru",
        "save": "",
        "appendonly": "no",
    }


def test_when_full_sessions_with_a_ttl_are_evicted_and_keys_without_one_kept(start: Start) -> None:
    client = start(RedisSpec(enabled=True, maxmemory_mb=2))
    client.set("feature-flags", "kept")
    for index in range(4000):  # 4 MB of sessions into 2 MB
        client.set(f"session:{index}", "x" * 1000, ex=3600)
    assert int(client.info("stats")["evicted_keys"]) > 0
    assert client.get("feature-flags") == "kept"
    # Which sessions go is approximate LRU on a one-second clock, so every session written in the
    # same second is an equal candidate: the claim is that some are kept, not which ones.
    assert 0 < client.dbsize() - 1 < 4000


@pytest.mark.parametrize(("persistence", "kept"), [("none", False), ("aof", True)])
def test_sessions_survive_a_restart_only_with_persistence(start: Start, persistence: str, kept: bool) -> None:
    spec = RedisSpec(enabled=True, persistence=persistence)  # type: ignore[arg-type]
    start(spec).set("session:abc", "user-1")
    assert (start(spec).get("session:abc") == "user-1") is kept
