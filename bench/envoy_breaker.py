"""Benchmark: what the circuit-breaker sidecar costs a healthy call and saves a call to a dead upstream.

Runs the sidecar's generated bootstrap in a real Envoy in front of two instances of
`bench/envoy_upstream.py` on loopback: one healthy, one that accepts connections and never
answers. Measures, in one run:

- the dead upstream called directly, bounded only by the client timeout (the sidecar's request timeout);
- the dead upstream through the sidecar once its breaker is open (the host ejected): target p99 < 5 ms;
- the healthy upstream directly and through the sidecar: target < 1 ms added at p50;
- how long after tripping the breaker lets calls through again, once the upstream is back.

Usage: `uv run python bench/envoy_breaker.py [--calls 3000]`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from components.circuit_breaker import Inbound, Retry, SidecarSpec, Upstream, envoy_args, render_config
from testsupport.process import LOOPBACK, ServerProcess, free_port, port_open

UPSTREAM_SCRIPT = Path(__file__).resolve().parent / "envoy_upstream.py"
DEAD_TIMEOUT_MS = 1000
DIRECT_DEAD_CALLS = 5


class Client:
    """One keep-alive connection, reopened when the server closes it; times each call in ms."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)

    def timed(self, path: str = "/") -> tuple[float, int, str]:
        started = time.perf_counter()
        try:
            self.conn.request("GET", path)
            response = self.conn.getresponse()
            status, body = response.status, response.read().decode()
        except TimeoutError:
            status, body = 0, "client timeout"
            self.reconnect()
        elapsed = (time.perf_counter() - started) * 1000
        if status and response.getheader("connection") == "close":
            self.reconnect()
        return elapsed, status, body

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)


def backend(tmp: Path, name: str, mode: str) -> tuple[ServerProcess, int]:
    port = free_port()
    process = ServerProcess(
        [sys.executable, str(UPSTREAM_SCRIPT), str(port)], ready=lambda: port_open(port), log=tmp / f"{name}.log"
    )
    set_mode(port, mode)
    return process, port


def set_mode(port: int, mode: str) -> None:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    conn.request("PUT", f"/_mode/{mode}")
    assert conn.getresponse().status == 200
    conn.close()


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98], max(samples)


def sample(client: Client, calls: int) -> list[float]:
    return [client.timed()[0] for _ in range(calls)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per measured row (healthy and breaker-open)")
    args = parser.parse_args()
    envoy = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    tmp = Path(tempfile.mkdtemp(prefix="envoy-bench-"))
    processes: list[ServerProcess] = []
    try:
        healthy, healthy_port = backend(tmp, "healthy", "ok")
        dead, dead_port = backend(tmp, "dead", "hang")
        processes += [healthy, dead]
        dead_upstream = Upstream(
            name="dead",
            host=LOOPBACK,
            port=dead_port,
            local_port=free_port(),
            request_timeout_ms=DEAD_TIMEOUT_MS,
            retry=Retry(per_try_timeout_ms=DEAD_TIMEOUT_MS),
        )
        healthy_upstream = replace(dead_upstream, name="healthy", port=healthy_port, local_port=free_port())
        spec = SidecarSpec(
            address=LOOPBACK,
            admin_port=free_port(),
            health_port=free_port(),
            inbound=Inbound(port=free_port()),
            upstreams=(dead_upstream, healthy_upstream),
        )
        (tmp / "envoy.yaml").write_text(render_config(spec))
        processes.append(
            ServerProcess(
                [envoy, *envoy_args(spec, str(tmp))], ready=lambda: port_open(spec.health_port), log=tmp / "e.log"
            )
        )

        rows: list[tuple[str, list[float]]] = []
        direct_dead = Client(dead_port, timeout=DEAD_TIMEOUT_MS / 1000)
        rows.append(
            (f"dead upstream, direct (client timeout {DEAD_TIMEOUT_MS} ms)", sample(direct_dead, DIRECT_DEAD_CALLS))
        )

        via = Client(dead_upstream.local_port)
        started = time.perf_counter()
        trip_calls = 0
        while (reply := via.timed())[2] != "no healthy upstream":
            trip_calls += 1
        tripped = time.perf_counter()
        trip_seconds = tripped - started
        open_samples = [via.timed() for _ in range(args.calls)]
        assert {body for _, _, body in open_samples} == {"no healthy upstream"}, "breaker closed during the run"
        rows.append(("dead upstream, via sidecar, breaker open", [ms for ms, _, _ in open_samples]))

        direct, sidecar = Client(healthy_port), Client(healthy_upstream.local_port)
        sample(direct, 200), sample(sidecar, 200)  # warm both paths
        direct_samples: list[float] = []
        sidecar_samples: list[float] = []
        for _ in range(10):  # interleave blocks so drift on a shared machine hits both alike
            direct_samples += sample(direct, args.calls // 10)
            sidecar_samples += sample(sidecar, args.calls // 10)
        rows += [("healthy upstream, direct", direct_samples), ("healthy upstream, via sidecar", sidecar_samples)]

        set_mode(dead_port, "ok")  # the dead upstream comes back: how long until the sidecar sends to it again?
        while via.timed()[1] != 200:
            time.sleep(0.01)
        recovery_seconds = time.perf_counter() - tripped

        print(f"\nbreaker tripped after {trip_calls} timed-out call(s), {trip_seconds:.2f} s; reply: {reply[2]!r}\n")
        print(f"| {'call':<48} | {'n':>5} | {'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8} |")
        print(f"|{'-' * 50}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
        for label, samples in rows:
            p50, p99, worst = percentiles(samples)
            print(f"| {label:<48} | {len(samples):>5} | {p50:>8.3f} | {p99:>8.3f} | {worst:>8.3f} |")
        open_p99 = percentiles(rows[1][1])[1]
        added = percentiles(sidecar_samples)[0] - percentiles(direct_samples)[0]
        print(f"\nbreaker open: p99 {open_p99:.3f} ms (target < 5 ms); dead call without it: {DEAD_TIMEOUT_MS} ms")
        print(f"sidecar adds {added:.3f} ms at p50 to a healthy call (target < 1 ms)")
        outlier = dead_upstream.outlier
        print(
            f"breaker closed again {recovery_seconds:.2f} s after it tripped "
            f"(base ejection {outlier.base_ejection_time_ms} ms, reviewed every {outlier.interval_ms} ms)"
        )
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
