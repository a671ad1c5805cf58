"""components/scripts/edge/purge_fanout.py, run as the Job runs it, against two real varnishd replicas."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench.edge_support import OriginServer, Varnish, loopback_policy
from components.edge_cache import SCRIPT, SCRIPT_DIR, SCRIPT_FILE, EdgeCacheSpec, purge_job
from components.edge_cache_vcl import CachePolicy, PathRule
from components.labels import Meta
from testsupport.process import LOOPBACK, free_port, require_binary

pytestmark = pytest.mark.integration

POLICY = CachePolicy(rules=(PathRule(prefix="/", kind="api", ttl_seconds=300),))


@pytest.fixture(scope="module")
def origin() -> Iterator[OriginServer]:
    server = OriginServer()
    for path in ("/a/1", "/a/2", "/b/1"):
        server.set(path, path.encode(), Surrogate_Key=f"tag{path.replace('/', '-')} all")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(origin: OriginServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Varnish]]:
    binary = require_binary("varnishd", "apt-get install varnish")
    logs = tmp_path_factory.mktemp("fanout")
    started = [Varnish(binary, logs, loopback_policy(POLICY, origin.port), name=f"replica-{i}") for i in range(2)]
    yield started
    for varnish in started:
        varnish.stop()


def fanout(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def addresses(replicas: list[Varnish]) -> str:
    return ",".join(f"{LOOPBACK}:{varnish.purge_port}" for varnish in replicas)


def warm(replicas: list[Varnish], *paths: str) -> None:
    for varnish in replicas:
        for path in paths:
            varnish.get(path)
            assert varnish.get(path).cache == "HIT"


def states(replicas: list[Varnish], path: str) -> list[str]:
    return [varnish.get(path).cache for varnish in replicas]


def test_ban_prefix_reaches_every_replica(replicas: list[Varnish]) -> None:
    warm(replicas, "/a/1", "/b/1")
    result = fanout("ban", "--prefix", "/a/", EDGE_CACHE_ADDRESSES=addresses(replicas))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("-> ok") == 2
    assert "2 replica(s), 1 request(s) each, 0 failed" in result.stdout
    assert states(replicas, "/a/1") == ["MISS", "MISS"]
    assert states(replicas, "/b/1") == ["HIT", "HIT"]


def test_ban_tag_and_purge_reach_every_replica(replicas: list[Varnish]) -> None:
    warm(replicas, "/a/1", "/a/2", "/b/1")
    tagged = fanout("ban", "--tag", "tag-a-2", EDGE_CACHE_ADDRESSES=addresses(replicas))
    purged = fanout("purge", "/b/1", EDGE_CACHE_ADDRESSES=addresses(replicas))
    assert (tagged.returncode, purged.returncode) == (0, 0), tagged.stdout + purged.stdout
    assert states(replicas, "/a/2") == ["MISS", "MISS"]
    assert states(replicas, "/b/1") == ["MISS", "MISS"]
    assert states(replicas, "/a/1") == ["HIT", "HIT"]


def test_replicas_found_through_dns(replicas: list[Varnish]) -> None:
    """EDGE_CACHE_PEERS is resolved as in Kubernetes; `localhost` resolves to this replica's 127.0.0.1."""
    first = replicas[0]
    warm([first], "/b/1")
    result = fanout("ban", "--prefix", "/b/", EDGE_CACHE_PEERS="localhost", EDGE_CACHE_PURGE_PORT=str(first.purge_port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{LOOPBACK}:{first.purge_port} BAN / X-Ban-Prefix=/b/ -> ok" in result.stdout
    assert first.get("/b/1").cache == "MISS"


def test_the_release_job_command_runs_as_built(replicas: list[Varnish]) -> None:
    """The Job's own command and environment, with the script's in-pod path and DNS name mapped to this host."""
    job = purge_job(Meta("phase5", "phase5", "0.1.0"), EdgeCacheSpec(), "scaleladder/sample:0.1.0")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = [sys.executable if arg == "python" else arg for arg in container["command"]]
    command = [str(SCRIPT) if arg == f"{SCRIPT_DIR}/{SCRIPT_FILE}" else arg for arg in command]
    env = {item["name"]: item["value"] for item in container["env"]}
    env |= {"EDGE_CACHE_PEERS": "localhost", "EDGE_CACHE_PURGE_PORT": str(replicas[1].purge_port)}
    warm(replicas[1:], "/a/1", "/b/1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert replicas[1].get("/a/1").cache == "MISS"
    assert replicas[1].get("/b/1").cache == "MISS"


def test_an_unreachable_replica_fails_the_run(replicas: list[Varnish]) -> None:
    warm(replicas, "/a/1")
    dead = f"{LOOPBACK}:{free_port()}"
    result = fanout("ban", "--tag", "all", EDGE_CACHE_ADDRESSES=f"{addresses(replicas)},{dead}")
    assert result.returncode == 1
    assert f"{dead} BAN / X-Ban-Tag=all -> FAILED (ConnectionRefusedError" in result.stdout
    assert "3 replica(s), 1 request(s) each, 1 failed" in result.stdout
    assert states(replicas, "/a/1") == ["MISS", "MISS"]  # the reachable replicas were still invalidated


def test_a_refused_ban_is_reported_not_retried(replicas: list[Varnish]) -> None:
    result = fanout("ban", "--tag", "not a tag", EDGE_CACHE_ADDRESSES=addresses(replicas[:1]))
    assert result.returncode == 1
    assert "FAILED (400 X-Ban-Tag must match [A-Za-z0-9_.:-]+)" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["ban"], {"EDGE_CACHE_ADDRESSES": "127.0.0.1:1"}, "ban: give at least one --prefix or --tag"),
        (["purge", "/x"], {}, "set EDGE_CACHE_PEERS (headless Service DNS name) or EDGE_CACHE_ADDRESSES"),
        (["purge", "/x"], {"EDGE_CACHE_ADDRESSES": "nohost"}, "expected host:port items, got 'nohost'"),
        (
            ["purge", "/x"],
            {"EDGE_CACHE_PEERS": "no-such-peers.invalid", "EDGE_CACHE_WAIT_SECONDS": "0"},
            "EDGE_CACHE_PEERS: 'no-such-peers.invalid' lists no replica",
        ),
    ],
)
def test_configuration_errors_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    result = fanout(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr
