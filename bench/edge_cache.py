"""Benchmark of the edge cache, every figure measured in this one run (a benchmark, not a test).

    uv run python bench/edge_cache.py [--duration 8] [--rounds 3] [--bare-starlette]

1. Hit throughput: the same cached 2 KB object through the generated VCL vs. raw Varnish (a
   minimal VCL that just caches), `wrk -t2 -c64`, alternating rounds, medians. Target >= 80 %.
2. Edge hit vs. the sample service's own cached read (`GET /products/1` served from Redis by
   cache-aside, one uvicorn worker, real Postgres and Redis on loopback), and the same read
   through Varnish running the generated VCL in front of that service. Target >= 5x.
   `--bare-starlette` compares against a bare Starlette JSON app instead (when the sample
   service cannot run).
3. Zipf replay: 10,000 products, Zipf(s=1.0) popularity, a third of the URLs carrying tracking
   parameters or the query string in another order, objects living 10 s (origin max-age); one
   continuous replay, 10 s warm-up, then the hit ratio from varnishstat counters over the next
   20 s (two expiry cycles), generated VCL vs. raw VCL. Target >= 95 %.

All traffic goes to 127.0.0.1; every wrk run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.edge_support import Answer, OriginServer, Varnish, loopback_policy, request
from components.edge_cache_vcl import CachePolicy, Origin
from testsupport.process import LOOPBACK, ServerProcess, free_port, port_open

PRODUCTS = 10_000
ZIPF_S = 1.0
ZIPF_TTL_SECONDS = 10  # origin's max-age: the measured window spans two expiry cycles
ZIPF_WARMUP_SECONDS = 10
ZIPF_WINDOW_SECONDS = 20
REPLAY_LENGTH = 200_000
OBJECT = json.dumps({"id": 1, "name": "Product 1", "description": "x" * 1900, "price_cents": 100}).encode()
RAW_VCL = """vcl 4.1;

backend origin {{
    .host = "{host}";
    .port = "{port}";
}}
"""
REPLAY_LUA = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local paths = {}
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(tonumber(args[2]) * 1000 + id)
end
function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""
SAMPLE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = {body!r}

async def product(request):
    return Response(BODY, media_type="application/json", headers={{"cache-control": "public, max-age=30"}})

async def healthz(request):
    return Response(b"ok")

app = Starlette(routes=[Route("/products/{{id}}", product), Route("/healthz", healthz)])
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(port: int, path: str, duration: int, script: Path | None = None, *script_args: str) -> Load:
    """`wrk -t2 -c64 --latency` against 127.0.0.1:port for `duration` seconds, optionally with a Lua script."""
    command = ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency"]
    command += ["-s", str(script)] if script else []
    command += [f"http://{LOOPBACK}:{port}{path}"]
    command += ["--", *script_args] if script_args else []
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Load(rps, latency(out, "50%"), latency(out, "99%"), int(errors.group(1)) if errors else 0)


def latency(out: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def median(loads: list[Load]) -> Load:
    return Load(
        statistics.median(load.rps for load in loads),
        statistics.median(load.p50_ms for load in loads),
        statistics.median(load.p99_ms for load in loads),
        sum(load.errors for load in loads),
    )


def start_varnish(binary: str, logs: Path, policy: CachePolicy, name: str, *, raw: bool = False) -> Varnish:
    vcl = RAW_VCL.format(host=policy.origin.host, port=policy.origin.port) if raw else None
    return Varnish(binary, logs, policy, name=name, storage_mib=256, vcl=vcl)


def warm(varnish: Varnish, path: str) -> None:
    for _ in range(3):
        response = varnish.get(path)
    assert response.status == 200 and varnish.get(path).headers.get("age") is not None, response


def hit_throughput(binary: str, logs: Path, duration: int, rounds: int) -> tuple[Load, Load]:
    origin = OriginServer(Answer(200, {"Content-Type": "application/json", "Cache-Control": "max-age=3600"}, OBJECT))
    policy = loopback_policy(CachePolicy(), origin.port, probe_interval_seconds=5)
    raw = start_varnish(binary, logs, policy, "raw", raw=True)
    generated = start_varnish(binary, logs, policy, "generated")
    try:
        for varnish in (raw, generated):
            warm(varnish, "/products/1")
        raw_loads, generated_loads = [], []
        for _ in range(rounds):
            raw_loads.append(wrk(raw.http_port, "/products/1", duration))
            generated_loads.append(wrk(generated.http_port, "/products/1", duration))
        return median(raw_loads), median(generated_loads)
    finally:
        raw.stop()
        generated.stop()
        origin.stop()


@contextmanager
def sample_service(logs: Path) -> Iterator[int]:
    """`sample serve` (one worker, cache-aside on) with real Postgres and Redis; yields its port."""
    from testsupport.postgres import PostgresServer
    from testsupport.redis import RedisServer

    postgres = PostgresServer.primary()
    redis = RedisServer.start()
    service: ServerProcess | None = None
    try:
        postgres.create_database("sample")
        env = {
            "DATABASE_URL": postgres.dsn("sample"),
            "REDIS_URL": redis.url,
            "CACHE_ENABLED": "true",
            "WEB_CONCURRENCY": "1",
            "COOKIE_SECURE": "false",
        }
        migrate = subprocess.run(
            [sys.executable, "-m", "sample", "migrate"], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert migrate.returncode == 0, migrate.stderr
        postgres.sql(
            "INSERT INTO products (sku, name, description, price_cents, stock)"
            " SELECT 'sku-' || g, 'Product ' || g, repeat('x', 1900), 100 * g, 1000 FROM generate_series(1, 10) g",
            "sample",
        )
        port = free_port()
        service = ServerProcess(
            [sys.executable, "-m", "sample", "serve"],
            ready=lambda: port_open(port) and request(port, "/healthz").status == 200,
            log=logs / "sample.log",
            env={**env, "PORT": str(port)},
        )
        yield port
    finally:
        if service is not None:
            service.stop()
        redis.close()
        postgres.close()


@contextmanager
def bare_starlette(logs: Path) -> Iterator[int]:
    """A bare Starlette JSON app under uvicorn (one worker) answering /products/{id} with OBJECT."""
    directory = Path(tempfile.mkdtemp(prefix="edge-bench-app-"))
    (directory / "bare_app.py").write_text(SAMPLE_APP.format(body=OBJECT))
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", LOOPBACK, "--port", str(port), "--no-access-log"],
        ready=lambda: port_open(port),
        log=logs / "bare-app.log",
        cwd=directory,
    )
    try:
        yield port
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def service_comparison(binary: str, logs: Path, duration: int, rounds: int, bare: bool) -> tuple[Load, Load]:
    with bare_starlette(logs) if bare else sample_service(logs) as port:
        origin = Origin(host=LOOPBACK, port=port, health_path="/healthz")
        varnish = start_varnish(binary, logs, CachePolicy(origin=origin), "front-of-service")
        try:
            direct = request(port, "/products/1")
            assert direct.status == 200, direct
            warm(varnish, "/products/1")
            service_loads, edge_loads = [], []
            for _ in range(rounds):
                service_loads.append(wrk(port, "/products/1", duration))
                edge_loads.append(wrk(varnish.http_port, "/products/1", duration))
            return median(service_loads), median(edge_loads)
        finally:
            varnish.stop()


def zipf_paths(count: int, rng: random.Random) -> list[str]:
    """`count` request URLs: Zipf(ZIPF_S) over PRODUCTS ids, a third with tracking noise or reordered queries."""
    weights = [1.0 / (rank**ZIPF_S) for rank in range(1, PRODUCTS + 1)]
    cumulative = list(accumulate(weights))
    total = cumulative[-1]
    paths = []
    for _ in range(count):
        product = bisect.bisect_left(cumulative, rng.random() * total) + 1
        query = ["currency=EUR", "fields=name,price"]
        noise = rng.random()
        if noise < 0.15:
            query.append(f"utm_source=campaign{rng.randrange(50)}")
        elif noise < 0.33:
            query.reverse()
        paths.append(f"/products/{product}?{'&'.join(query)}")
    return paths


def accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def hit_ratio(varnish: Varnish, script: Path, replay: Path, warmup: int, window: int) -> float:
    """Hits / (hits + misses) over the last `window` seconds of one continuous replay of `warmup + window` s."""
    names = ("MAIN.cache_hit", "MAIN.cache_miss")
    seed = str(random.Random(20261127).randrange(10**6))
    command = ["wrk", "-t2", "-c64", f"-d{warmup + window + 2}s", "-s", str(script)]
    command += [f"http://{LOOPBACK}:{varnish.http_port}/", "--", str(replay), seed]
    load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(warmup)
        before = varnish.counters(*names)
        time.sleep(window)
        after = varnish.counters(*names)
    finally:
        output = load.communicate(timeout=60)[0]
    hits = after["MAIN.cache_hit"] - before["MAIN.cache_hit"]
    misses = after["MAIN.cache_miss"] - before["MAIN.cache_miss"]
    if load.returncode != 0 or hits + misses == 0:
        raise RuntimeError(f"replay failed (wrk exit {load.returncode}, {hits + misses} lookups):\n{output}")
    return hits / (hits + misses)


def zipf_replay(binary: str, logs: Path) -> tuple[float, float]:
    headers = {"Content-Type": "application/json", "Cache-Control": f"max-age={ZIPF_TTL_SECONDS}"}
    origin = OriginServer(Answer(200, headers, OBJECT))
    directory = Path(tempfile.mkdtemp(prefix="edge-bench-zipf-"))
    script, replay = directory / "replay.lua", directory / "paths.txt"
    script.write_text(REPLAY_LUA)
    replay.write_text("\n".join(zipf_paths(REPLAY_LENGTH, random.Random(20261127))) + "\n")
    policy = loopback_policy(CachePolicy(), origin.port, probe_interval_seconds=5)
    ratios = []
    try:
        for name, raw in (("zipf-generated", False), ("zipf-raw", True)):
            varnish = start_varnish(binary, logs, policy, name, raw=raw)
            try:
                ratios.append(hit_ratio(varnish, script, replay, ZIPF_WARMUP_SECONDS, ZIPF_WINDOW_SECONDS))
            finally:
                varnish.stop()
    finally:
        origin.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return ratios[0], ratios[1]


def row(name: str, load: Load) -> str:
    return f"| {name} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.errors} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison (medians)")
    parser.add_argument("--bare-starlette", action="store_true", help="compare with a bare Starlette app")
    args = parser.parse_args()
    binary = shutil.which("varnishd") or sys.exit("varnishd not found: apt-get install varnish")
    logs = Path(tempfile.mkdtemp(prefix="edge-bench-logs-"))

    raw, generated = hit_throughput(binary, logs, args.duration, args.rounds)
    service, edge = service_comparison(binary, logs, args.duration, args.rounds, args.bare_starlette)
    zipf_generated, zipf_raw = zipf_replay(binary, logs)

    what = "bare Starlette JSON app" if args.bare_starlette else "sample service, Redis cache-aside hit"
    print(f"\nwrk -t2 -c64, {args.duration}s per run, median of {args.rounds} alternating rounds, loopback\n")
    print("| path | req/s | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|")
    print(row("raw Varnish (minimal VCL), cached 2 KB object", raw))
    print(row("generated VCL, same object", generated))
    print(row(f"{what}, GET /products/1", service))
    print(row("generated VCL in front of it, GET /products/1", edge))
    print()
    print("| ratio | measured | target |")
    print("|---|---|---|")
    print(f"| generated VCL hit / raw Varnish hit | {generated.rps / raw.rps:.0%} | >= 80% |")
    print(f"| edge hit / {what} | {edge.rps / service.rps:.1f}x | >= 5x |")
    print(f"| Zipf replay steady-state hit ratio, generated VCL | {zipf_generated:.1%} | >= 95% |")
    print(f"| Zipf replay steady-state hit ratio, raw VCL (no key normalisation) | {zipf_raw:.1%} | - |")
    print(f"\nlogs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
