"""Benchmark the sample service against real Postgres and Redis on loopback (not a test).

    uv run python services/sample/bench/run.py [--duration 10]

Starts Postgres and Redis (testsupport), migrates and seeds the catalog, then drives each case with
wrk, 64 connections. One-worker cases pin the server to CPU 0 and wrk to CPU 1, as the baselines
did; two-worker cases let everything share both CPUs. Every figure is also given as a ratio to the
ceiling (a bare Starlette app returning the same product JSON) measured in the same run.
Postgres and Redis run on CPU 1 beside wrk in the one-worker cases, so CPU 0 measures the server alone.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from testsupport.postgres import PostgresServer  # noqa: E402
from testsupport.process import LOOPBACK, free_port, port_open  # noqa: E402
from testsupport.redis import RedisServer  # noqa: E402

PRODUCTS = 10_000
HOT = 1_000
CONNECTIONS = 64
ZIPF_S = 1.0
ZIPF_TTL = 20  # short, so that expiry-driven misses are part of the measured steady state
ZIPF_CACHES = (  # (label, cache settings): expiry alone, then what refresh-ahead and a stale grace add
    ("expiry only", {"CACHE_REFRESH_AHEAD_PERCENT": "0", "CACHE_STALE_SECONDS": "0"}),
    ("refresh-ahead 25%", {"CACHE_REFRESH_AHEAD_PERCENT": "25", "CACHE_STALE_SECONDS": "0"}),
    ("refresh-ahead 25% + stale 20 s", {"CACHE_REFRESH_AHEAD_PERCENT": "25", "CACHE_STALE_SECONDS": str(ZIPF_TTL)}),
)

UNIFORM = """
math.randomseed(os.time())
request = function() return wrk.format("GET", "/products/" .. math.random(1, {n})) end
"""
WRITE = """
math.randomseed(os.time())
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  return wrk.format("PATCH", "/products/" .. math.random(1, {n}), headers, '{{"stock": ' .. math.random(1, 999) .. '}}')
end
"""
ZIPF = """
math.randomseed(os.time())
local n, s, cdf, sum = {n}, {s}, {{}}, 0
for i = 1, n do sum = sum + 1 / (i ^ s); cdf[i] = sum end
for i = 1, n do cdf[i] = cdf[i] / sum end
request = function()
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", "/products/" .. lo)
end
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    rss_mb: float
    requests: int
    errors: str
    cpu_us: float  # server CPU time per request: robust to other load on the machine, unlike req/s


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return total / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: str) -> None:
    """Set the CPU affinity of a process, all its threads and all its descendants."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)
    for child in _children(pid):
        pin(child, cpus)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class Server:
    """A server command as a child process on a free port, optionally pinned to CPUs."""

    def __init__(self, argv: list[str], env: dict[str, str], cpus: str | None, workers: int = 1) -> None:
        self.port = free_port()
        self.workers = workers
        command = (["taskset", "-c", cpus] if cpus else []) + [a.format(port=self.port) for a in argv]
        self.log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            command, env={**os.environ, **env, "PORT": str(self.port)}, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not start:\n{Path(self.log.name).read_text()[-3000:]}")
            time.sleep(0.05)
        time.sleep(0.5 if workers == 1 else 2.0)  # every worker up

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the server itself, or the spawned workers under uvicorn's supervisor."""
        if self.workers == 1:
            return [self.proc.pid]  # taskset execs the server, so this is its pid
        kids = _children(self.proc.pid)
        return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}{path}", timeout=10) as response:
            return response.read()

    def post(self, path: str, body: bytes) -> bytes:
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.port}{path}", body, {"content-type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def metric(self, name: str) -> float:
        text = self.get("/metrics").decode()
        return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def warm(server: Server) -> None:
    """Load the hot set into the cache, 100 ids per batch get."""
    for first in range(1, HOT + 1, 100):
        server.post("/products/batch-get", b'{"ids": [%s]}' % ",".join(map(str, range(first, first + 100))).encode())


def measure(server: Server, name: str, script: str, duration: int, cpus: str | None) -> Result:
    """A 3 s unmeasured run first (connection pools grow, caches of the interpreter warm), then the case."""
    wrk(server, "warm-up", script, 3, cpus)
    return wrk(server, name, script, duration, cpus)


def wrk(server: Server, name: str, script: str, duration: int, cpus: str | None) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    pids = server.worker_pids()
    peak = {pid: 0.0 for pid in pids}
    done = threading.Event()

    def sample_rss() -> None:
        while not done.wait(0.25):
            for pid in pids:
                peak[pid] = max(peak[pid], _rss_mb(pid))

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    cpu_before = _cpu_seconds(pids)
    command = (["taskset", "-c", cpus] if cpus else []) + [
        "wrk", "-t1" if cpus else "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "-s", lua.name,
        f"http://{LOOPBACK}:{server.port}",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = _cpu_seconds(pids) - cpu_before
    done.set()
    sampler.join()
    latency = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", out, re.M))
    if set(latency) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = "; ".join(m.strip() for m in re.findall(r"^\s*(Non-2xx.*|Socket errors.*)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Result(
        name,
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        _ms(latency["50"]),
        _ms(latency["99"]),
        max(peak.values()),
        requests,
        errors,
        cpu * 1e6 / max(requests, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured case (default 10)")
    parser.add_argument(
        "--zipf-warmup",
        type=int,
        default=45,
        help=f"seconds of Zipf traffic before measuring (> 2 TTLs of {ZIPF_TTL} s)",
    )
    args = parser.parse_args()
    d = args.duration
    postgres = PostgresServer.primary()
    redis = RedisServer.start()
    servers: list[Server] = []
    try:
        dsn = postgres.create_database("bench")
        base = {"DATABASE_URL": dsn, "LOG_LEVEL": "warning"}
        subprocess.run([sys.executable, "-m", "sample", "migrate"], env={**os.environ, **base}, check=True)
        postgres.sql(
            "INSERT INTO products (sku, name, description, price_cents, stock)"
            f" SELECT 'sku-' || g, 'Product ' || g, 'A sturdy everyday product', 100 * g, 1000"
            f" FROM generate_series(1, {PRODUCTS}) g",
            "bench",
        )
        postgres.sql("VACUUM ANALYZE products", "bench")
        # One-worker cases give CPU 0 to the server alone: Postgres and Redis share CPU 1 with wrk.
        assert postgres.process is not None and redis.process is not None
        pin(postgres.process.proc.pid, "1")
        pin(redis.process.proc.pid, "1")
        serve = [sys.executable, "-m", "sample", "serve"]
        cached_env = {**base, "REDIS_URL": redis.url, "CACHE_ENABLED": "true", "CACHE_TTL_SECONDS": "300"}
        results: list[Result] = []

        def start(env: dict[str, str], cpus: str | None, workers: int = 1) -> Server:
            server = Server(serve, {**env, "WEB_CONCURRENCY": str(workers)}, cpus, workers)
            servers.append(server)
            return server

        def finish(server: Server) -> None:
            server.stop()
            servers.remove(server)

        uncached = start(base, "0")
        body = uncached.get("/products/1")
        with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
            f.write(body)
        uvicorn_flags = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        ceiling = Server(
            [sys.executable, "-m", "uvicorn", "ceiling:app", "--app-dir", str(Path(__file__).parent), *uvicorn_flags,
             "--host", LOOPBACK, "--port", "{port}"],
            {"CEILING_BODY": f.name}, "0",
        )  # fmt: skip
        servers.append(ceiling)
        ceiling_script = UNIFORM.format(n=PRODUCTS)
        ceiling_first = measure(ceiling, "ceiling", ceiling_script, d, "1")

        results.append(measure(uncached, "uncached read (GET /products/{id})", UNIFORM.format(n=PRODUCTS), d, "1"))
        results.append(measure(uncached, "write (PATCH /products/{id})", WRITE.format(n=PRODUCTS), d, "1"))
        finish(uncached)

        cached = start(cached_env, "0")
        warm(cached)
        all_hits = measure(cached, f"cached read (hot set of {HOT}, all hits)", UNIFORM.format(n=HOT), d, "1")
        results.append(all_hits)
        finish(cached)

        zipf_figures: list[tuple[Result, float]] = []
        for label, cache_env in ZIPF_CACHES:
            redis.command("FLUSHALL")
            zipf = start({**cached_env, "CACHE_TTL_SECONDS": str(ZIPF_TTL), **cache_env}, "0")
            wrk(zipf, "zipf warm-up", ZIPF.format(n=PRODUCTS, s=ZIPF_S), args.zipf_warmup, "1")
            queries_before = zipf.metric("db_queries_total")
            zipf_result = wrk(
                zipf, f"Zipf(s={ZIPF_S}) reads over {PRODUCTS}, {label}", ZIPF.format(n=PRODUCTS, s=ZIPF_S), d, "1"
            )
            zipf_figures.append((zipf_result, zipf.metric("db_queries_total") - queries_before))
            results.append(zipf_result)
            finish(zipf)

        # The ceiling again at the end: the better of the two is the reference (others share this machine).
        ceiling_last = measure(ceiling, "ceiling", ceiling_script, d, "1")
        finish(ceiling)
        best = max(ceiling_first, ceiling_last, key=lambda r: r.rps)
        best.name = "ceiling: bare Starlette, same JSON (better of 2 runs)"
        results.insert(0, best)

        # Workers scale only where CPU is left: compare one and two workers under the same sharing.
        pin(postgres.process.proc.pid, "0,1")
        pin(redis.process.proc.pid, "0,1")
        shared: list[Result] = []
        for workers in (1, 2):
            server = start(cached_env, None, workers=workers)
            warm(server)
            shared.append(
                measure(server, f"cached read, {workers} worker(s), all on both CPUs", UNIFORM.format(n=HOT), d, None)
            )
            finish(server)
        results += shared

        top, top_cpu = results[0].rps, results[0].cpu_us
        print(
            f"\n{CONNECTIONS} connections, {d} s per case; 1-worker cases: server on CPU 0;"
            " wrk, Postgres and Redis on CPU 1; 2 workers: everything on both CPUs\n"
        )
        print("| case | req/s | x ceiling | p50 ms | p99 ms | server CPU us/req | x ceiling by CPU | worker RSS MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| {r.name} | {r.rps:,.0f} | {r.rps / top:.2f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us:.0f} |"
                f" {top_cpu / r.cpu_us:.2f} | {r.rss_mb:.0f} |"
            )
        print(f"\nZipf reads, cache TTL {ZIPF_TTL} s, measured after {args.zipf_warmup} s of the same traffic:")
        for result, queries in zipf_figures:
            print(
                f"- {result.name}: {queries:.0f} DB queries for {result.requests} reads ="
                f" {1000 * queries / result.requests:.1f} per 1000 reads; {result.rps / all_hits.rps:.2f}x the all-hits"
                " cached read"
            )
        print(f"2 workers / 1 worker (cached read, same CPU sharing): {shared[1].rps / shared[0].rps:.2f}x")
        for r in results:
            if r.errors:
                print(f"{r.name}: {r.errors}")
    finally:
        for server in servers:
            server.stop()
        redis.close()
        postgres.close()


if __name__ == "__main__":
    main()
