"""Real varnishd running the generated VCL, and an origin whose answers we control (tests and benchmark).

`OriginServer` is an HTTP/1.1 server in a thread on loopback: each path answers what `set()` said
(status, headers, body), `/healthz` answers 200 while `healthy`, and every request is counted
per path. `Varnish` starts varnishd in the foreground on free loopback ports with exactly
`varnishd_args()` of the builder plus a private work dir and a CLI secret, as the pods run it: as
root, under the pods' uid and gid (`components.edge_cache.RUN_AS`, no user entry), so unprivileged
and without a jail.
"""

from __future__ import annotations

import http.client
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from components.edge_cache import RUN_AS, EdgeCacheSpec, varnishd_args
from components.edge_cache_vcl import HEALTH_PATH, CachePolicy, Origin, render_vcl
from testsupport.process import LOOPBACK, ServerProcess, free_port, owned_by, port_open


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass
class Seen:
    """What the origin received: URLs as requested and the last request's headers per path."""

    hits: Counter[str] = field(default_factory=Counter)
    urls: list[str] = field(default_factory=list)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)


class QuietServer(ThreadingHTTPServer):
    """Clients (Varnish) dropping connections when they stop is expected: no traceback for it."""

    request_queue_size = 256  # bursts of misses must queue, not be refused

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class OriginServer:
    """The web tier stand-in: answers per path, a switchable health, counts per path."""

    def __init__(self, fallback: Answer | None = None) -> None:
        """`fallback` answers every path `set()` did not name (default: 404)."""
        self.answers: dict[str, Answer] = {}
        self.fallback = fallback or Answer(404, {}, b"no such path")
        self.healthy = True
        self.seen = Seen()
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                origin.handle(self)

            do_HEAD = do_GET

        self.server = QuietServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, path: str, body: bytes = b"ok", *, status: int = 200, delay: float = 0.0, **headers: str) -> None:
        """Answer `path` (no query) with `body`; header names from keywords: Cache_Control -> Cache-Control."""
        named = {key.replace("_", "-"): value for key, value in headers.items()}
        with self.lock:
            self.answers[path] = Answer(status, named, body, delay)

    def hits(self, path: str) -> int:
        with self.lock:
            return self.seen.hits[path]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            self.reply(request, Answer(200 if self.healthy else 503, {}, b"health"))
            return
        with self.lock:
            self.seen.hits[path] += 1
            self.seen.urls.append(request.path)
            self.seen.headers[path] = dict(request.headers.items())
            answer = self.answers.get(path, self.fallback)
            if not self.healthy:
                answer = Answer(500, {}, b"origin failing")
        if answer.delay:
            time.sleep(answer.delay)
        self.reply(request, answer)

    def reply(self, request: BaseHTTPRequestHandler, answer: Answer) -> None:
        request.send_response(answer.status)
        for key, value in answer.headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(answer.body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(answer.body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def cache(self) -> str:
        return self.headers.get("x-cache", "")


def request(
    port: int, path: str, method: str = "GET", *, source: str = LOOPBACK, headers: dict[str, str] | None = None
) -> Response:
    """One HTTP/1.1 request to 127.0.0.1:`port`, sent from `source` (any 127/8 address)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def loopback_policy(policy: CachePolicy, origin_port: int, *, probe_interval_seconds: int = 1) -> CachePolicy:
    """`policy` pointed at an origin on loopback, probed every second; one failed probe makes it sick."""
    origin = Origin(
        host=LOOPBACK,
        port=origin_port,
        probe_interval_seconds=probe_interval_seconds,
        probe_window=2,
        probe_threshold=2,
    )
    return replace(policy, origin=origin)


def varnish_dir(name: str) -> Path:
    """A fresh directory the pods' uid owns (when we are root): varnishd's VCL, secret and work dir."""
    return owned_by(RUN_AS, Path(tempfile.mkdtemp(prefix=f"edge-{name}-")), 0o755)


class Varnish:
    """varnishd in the foreground on free loopback ports, running `render_vcl(policy)` (or the text `vcl`).

    Logs go to `logs`.
    """

    def __init__(
        self,
        binary: str,
        logs: Path,
        policy: CachePolicy,
        *,
        name: str = "varnish",
        storage_mib: int = 64,
        vcl: str | None = None,
    ) -> None:
        self.dir = varnish_dir(name)
        self.vcl = self.dir / "default.vcl"
        self.vcl.write_text(render_vcl(policy) if vcl is None else vcl)
        self.secret = self.dir / "secret"
        self.secret.write_text(secrets.token_hex(16) + "\n")
        owned_by(RUN_AS, self.secret, 0o600)
        self.http_port, self.purge_port, self.admin_port = free_port(), free_port(), free_port()
        self.work_dir = self.dir / "work"
        args = varnishd_args(
            EdgeCacheSpec(storage_mib=storage_mib, policy=policy),
            vcl=str(self.vcl),
            work_dir=str(self.work_dir),
            address=LOOPBACK,
            http_port=self.http_port,
            purge_port=self.purge_port,
            admin_port=self.admin_port,
        )
        self.process = ServerProcess(
            [binary, *args, "-S", str(self.secret)],
            ready=self.ready,
            log=logs / f"{name}.log",
            timeout=60,
            uid=RUN_AS,
        )

    def ready(self) -> bool:
        return port_open(self.http_port) and request(self.http_port, HEALTH_PATH).status == 200

    def get(self, path: str, **headers: str) -> Response:
        return request(self.http_port, path, headers={key.replace("_", "-"): v for key, v in headers.items()})

    def invalidate(self, method: str, path: str = "/", *, source: str = LOOPBACK, **headers: str) -> Response:
        named = {key.replace("_", "-"): value for key, value in headers.items()}
        return request(self.purge_port, path, method, source=source, headers=named)

    def counters(self, *names: str) -> dict[str, int]:
        """Current values of varnishstat counters such as MAIN.cache_hit."""
        fields = [arg for name in names for arg in ("-f", name)]
        output = subprocess.run(
            ["varnishstat", "-n", str(self.work_dir), "-1", *fields],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return {line.split()[0]: int(line.split()[1]) for line in output.splitlines() if line.strip()}

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
