"""Benchmark the sample service's long-lived connections on loopback (not a test).

    uv run python services/sample/bench/realtime.py [--idle 19500] [--fanout 10000] [--runs 3]

Real Postgres, Redis and `sample serve` processes (one worker each); the clients run in separate
processes (asyncio; a minimal WebSocket reader for /ws, raw HTTP for /events) and bind to several
127.0.0.x source addresses, so one address's ephemeral port range is no limit. Three figures:

1. **Idle connections one worker holds**, WebSocket (without, then with permessage-deflate offered)
   and SSE, each on a fresh server: the worker's RSS before and after, per connection. Every
   connection is proven alive at the end by one event that must reach all of them.
2. **Fan-out**: one product change (PATCH through the first worker) to subscribers spread over two
   workers, publish-to-receive latency p50/p99/max (then again with every client offering
   permessage-deflate: a compression per subscriber); then the same subscribers on two bare fan-out
   servers (`fanout_ceiling.py`: one write per connection per event, nothing else) fed by the same
   publishes: the ratio of the two is what the service adds to what Python and loopback TCP cost.
3. **Worker kill**: the subscribers of two workers, a product change a second published through the second;
   the first is killed with SIGKILL. Its clients reconnect to the second (as a Service would route
   them: the dead endpoint is gone) with jittered backoff, resume from their last id, and the time
   until the last of them is back and caught up is reported, with events missed and duplicated.

Every latency is measured with CLOCK_MONOTONIC, which all processes on the machine share. The
clients share the machine's two cores with the servers, so every figure includes their cost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from testsupport.postgres import PostgresServer  # noqa: E402
from testsupport.process import LOOPBACK, free_port, port_open  # noqa: E402
from testsupport.redis import RedisServer  # noqa: E402

CLIENT_PROCESSES = 4
SOURCE_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(2, 10))  # ~28,000 ephemeral ports each
OPEN_CONCURRENCY = 64  # handshakes in flight per client process
PASSWORD = "correct horse"
SETTLE_SECONDS = 5.0
KILL_PUBLISH_INTERVAL = 1.0  # seconds between product changes while a worker is killed: 10,000 deliveries each


# --- the servers -------------------------------------------------------------------------------


SERVE = ("-m", "sample", "serve")
CEILING = (str(Path(__file__).with_name("fanout_ceiling.py")),)


class Worker:
    """`sample serve` with one worker process (or, with `command` CEILING, the bare fan-out server),
    on a free loopback port."""

    def __init__(self, env: dict[str, str], command: tuple[str, ...] = SERVE) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-realtime-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            env={**os.environ, **env, "LISTEN_ADDRESS": LOOPBACK, "PORT": str(self.port)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{command} did not start:\n{Path(self.log.name).read_text()[-3000:]}")
            time.sleep(0.05)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def request(self, method: str, path: str, body: Any = None, cookie: str = "") -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        headers = {"content-type": "application/json", **({"cookie": f"sid={cookie}"} if cookie else {})}
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data or b"null")

    def login(self, email: str) -> str:
        """A new user's session id."""
        self.request("POST", "/users", {"email": email, "name": "Bench", "password": PASSWORD})
        status, headers, body = self.request("POST", "/sessions", {"email": email, "password": PASSWORD})
        if status != 201:
            raise RuntimeError(f"login: {status} {body}")
        return headers["set-cookie"].split("sid=", 1)[1].split(";", 1)[0]

    def touch_product(self) -> float:
        """Change product 1 (one `product.updated` event); the monotonic time the request was sent."""
        sent = time.monotonic()
        status, _, body = self.request("PATCH", "/products/1", {"stock": random.randint(1, 999)})
        if status != 200:
            raise RuntimeError(f"PATCH /products/1: {status} {body}")
        return sent

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --- the clients (each group runs in its own process) ------------------------------------------


@dataclass
class GroupSpec:
    """`count` clients of one transport; client i starts on ports[i % len(ports)], and on a lost
    connection (when `reconnect`) moves to the next port in the list and resumes."""

    transport: str  # "ws", "ws-deflate" (offers permessage-deflate) or "sse"
    ports: list[int]
    count: int
    cookie: str
    first_source: int
    reconnect: bool = False


@dataclass
class ClientLog:
    """What one client saw: (event id, monotonic receive time), and when its connections ended."""

    port: int
    events: list[tuple[str, float]] = field(default_factory=list)
    lost_at: list[float] = field(default_factory=list)


class _WebSocketReader(asyncio.Protocol):
    """The least a WebSocket client can do, so the clients' CPU stays out of the server's figures:
    read the 101, then frames; note each event's id and arrival time (no JSON parsing), answer
    pings. A compressed frame (RSV1, when the client offered permessage-deflate) is inflated; the
    server sends no fragmented frames here."""

    def __init__(self, log: ClientLog) -> None:
        self.log = log
        self.inflater = zlib.decompressobj(wbits=-15)  # the server keeps its context across messages
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            if b" 101 " not in status:
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            del self.buffer[: end + 4]
            self.upgraded.set_result(None)
        self._frames(now)

    def _frames(self, now: float) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + length:
                return
            payload = bytes(buffer[offset : offset + length])
            if buffer[0] & 0x40:  # RSV1: permessage-deflate
                payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
            del buffer[: offset + length]
            if opcode == 0x1 and payload.startswith(b'{"op":"event"'):
                start = payload.index(b'"id":"') + 6
                self.log.events.append((payload[start : payload.index(b'"', start)].decode(), now))
            elif opcode == 0x9 and self.transport is not None:  # ping: pong with the same payload, masked
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            elif opcode == 0x8 and self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)


async def _ws_session(spec: GroupSpec, port: int, source: str, log: ClientLog, on_open: Callable[[], None]) -> None:
    last = log.events[-1][0] if log.events else ""
    query = "topics=products" + (f"&last_id={last}" if last else "")
    key = base64.b64encode(os.urandom(16)).decode()
    deflate = "sec-websocket-extensions: permessage-deflate\r\n" if spec.transport == "ws-deflate" else ""
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(
        lambda: _WebSocketReader(log), LOOPBACK, port, local_addr=(source, 0)
    )
    try:
        transport.write(
            f"GET /ws?{query} HTTP/1.1\r\nhost: bench\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            f"sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\ncookie: sid={spec.cookie}\r\n"
            f"{deflate}\r\n".encode()
        )
        await asyncio.wait_for(reader.upgraded, 120)
        on_open()
        await reader.closed
    finally:
        transport.close()


async def _sse_session(spec: GroupSpec, port: int, source: str, log: ClientLog, on_open: Callable[[], None]) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))
    try:
        last = log.events[-1][0] if log.events else ""
        resume = f"last-event-id: {last}\r\n" if last else ""
        writer.write(f"GET /events HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n{resume}\r\n".encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise ConnectionError(status.decode(errors="replace").strip())
        on_open()
        event_id = ""
        while line := await reader.readline():
            if line.startswith(b"id: "):
                event_id = line[4:].strip().decode()
            elif line.startswith(b"data: ") and event_id:
                log.events.append((event_id, time.monotonic()))
                event_id = ""
    finally:
        writer.close()


async def _client(spec: GroupSpec, index: int, log: ClientLog, opened: asyncio.Event, gate: asyncio.Semaphore) -> None:
    """One client: connects (at most OPEN_CONCURRENCY handshakes in flight per process) and reads;
    with `reconnect`, a lost connection is retried on the next port after a full-jitter backoff."""
    session = _sse_session if spec.transport == "sse" else _ws_session
    source = SOURCE_ADDRESSES[(spec.first_source + index) % len(SOURCE_ADDRESSES)]
    attempt = 0
    while True:
        await gate.acquire()
        held = True

        def on_open() -> None:
            nonlocal held, attempt
            if held:
                gate.release()
                held = False
            attempt = 0
            opened.set()

        try:
            await session(spec, log.port, source, log, on_open)
        except Exception as exc:
            if not opened.is_set() and not spec.reconnect:
                raise RuntimeError(f"client {index} on port {log.port}: {exc!r}") from exc
        finally:
            if held:
                gate.release()
        log.lost_at.append(time.monotonic())
        if not spec.reconnect:
            return
        log.port = spec.ports[(spec.ports.index(log.port) + 1) % len(spec.ports)]  # the endpoint that is left
        attempt += 1
        await asyncio.sleep(random.uniform(0, min(5.0, 0.25 * 2**attempt)))  # full jitter


def _run_group(spec: GroupSpec, pipe: Connection) -> None:
    """Open every client, report "open" (or the first failure), then on "report" send back the logs and stop."""

    async def main() -> None:
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)
        logs = [ClientLog(spec.ports[i % len(spec.ports)]) for i in range(spec.count)]
        opened = [asyncio.Event() for _ in logs]
        tasks = [asyncio.create_task(_client(spec, i, logs[i], opened[i], gate)) for i in range(spec.count)]
        started = time.monotonic()
        while not all(event.is_set() for event in opened):
            failed = next((t for t in tasks if t.done() and t.exception() is not None), None)
            if failed is not None or time.monotonic() - started > 600:
                pipe.send(("error", repr(failed.exception()) if failed else "not all open after 600 s"))
                for task in tasks:
                    task.cancel()
                return
            await asyncio.sleep(0.2)
        pipe.send(("open", time.monotonic() - started))
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        pipe.send(("logs", [(log.port, log.events, log.lost_at) for log in logs]))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


class Clients:
    """`total` clients spread over CLIENT_PROCESSES processes."""

    def __init__(self, transport: str, ports: list[int], total: int, cookie: str, reconnect: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        share = -(-total // CLIENT_PROCESSES)
        for n in range(CLIENT_PROCESSES):
            count = min(share, total - n * share)
            if count <= 0:
                break
            parent, child = context.Pipe()
            spec = GroupSpec(transport, ports, count, cookie, first_source=n * 2, reconnect=reconnect)
            proc = context.Process(target=_run_group, args=(spec, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.open_seconds = 0.0
        for pipe in self.pipes:
            kind, value = pipe.recv()
            if kind != "open":
                self.close()
                raise RuntimeError(f"clients failed to connect: {value}")
            self.open_seconds = max(self.open_seconds, value)

    def logs(self) -> list[ClientLog]:
        """Every client's log; the client processes end."""
        for pipe in self.pipes:
            pipe.send("report")
        logs = []
        for pipe in self.pipes:
            kind, value = pipe.recv()
            assert kind == "logs", value
            logs += [ClientLog(port, [tuple(e) for e in events], lost) for port, events, lost in value]
        self.close()
        return logs

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --- the three measurements --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def idle(transport: str, env: dict[str, str], count: int, cookie_for: Any) -> dict[str, float]:
    worker = Worker(env)
    try:
        cookie = cookie_for(worker)
        warm = Clients(transport, [worker.port], 1, cookie)  # the first connection loads the code paths
        worker.touch_product()
        warm.logs()
        time.sleep(1)
        before = worker.rss_mib()
        clients = Clients(transport, [worker.port], count, cookie)
        time.sleep(SETTLE_SECONDS)
        after = worker.rss_mib()
        _, _, stats = worker.request("GET", "/realtime/connections")
        worker.touch_product()
        time.sleep(SETTLE_SECONDS)
        logs = clients.logs()
        alive = sum(1 for log in logs if log.events)
        return {
            "connections": count,
            "server_counted": stats["process"],
            "alive": alive,
            "open_s": clients.open_seconds,
            "rss_before": before,
            "rss_after": after,
            "kib_per_connection": (after - before) * 1024 / count,
        }
    finally:
        worker.stop()


def fanout(env: dict[str, str], subscribers: int, publishes: int, cookie_for: Any) -> dict[str, float]:
    workers: list[Worker] = []
    try:
        first = _started(workers, env)
        second = _started(workers, env)
        cookie = cookie_for(first)

        def latencies(ports: list[int], count: int, transport: str = "ws") -> tuple[list[float], int]:
            clients = Clients(transport, ports, count, cookie)
            time.sleep(SETTLE_SECONDS)
            sent = []
            for _ in range(publishes):
                sent.append(first.touch_product())
                time.sleep(2.0)
            time.sleep(SETTLE_SECONDS)
            logs = clients.logs()
            ids = sorted({event_id for log in logs for event_id, _ in log.events}, key=_id_key)
            if len(ids) != publishes:
                raise RuntimeError(f"expected {publishes} events, saw {len(ids)}")
            at = {event_id: sent[n] for n, event_id in enumerate(ids)}
            values = [(t - at[event_id]) * 1000 for log in logs for event_id, t in log.events]
            return values, len(values)

        single, _ = latencies([first.port, second.port], 1)
        many, delivered = latencies([first.port, second.port], subscribers)
        deflated, _ = latencies([first.port, second.port], subscribers, "ws-deflate")
        ceilings = [_started(workers, env, CEILING), _started(workers, env, CEILING)]
        bare, _ = latencies([ceiling.port for ceiling in ceilings], subscribers)
        return {
            "single_p50": percentile(single, 0.5),
            "p50": percentile(many, 0.5),
            "p99": percentile(many, 0.99),
            "max": max(many),
            "delivered": delivered,
            "expected": subscribers * publishes,
            "deflate_p50": percentile(deflated, 0.5),
            "deflate_p99": percentile(deflated, 0.99),
            "ceiling_p50": percentile(bare, 0.5),
            "ceiling_p99": percentile(bare, 0.99),
        }
    finally:
        for worker in workers:
            worker.stop()


def _started(workers: list[Worker], env: dict[str, str], command: tuple[str, ...] = SERVE) -> Worker:
    """A new worker, remembered in `workers` (which the caller stops, whatever happens)."""
    workers.append(Worker(env, command))
    return workers[-1]


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def worker_kill(env: dict[str, str], subscribers: int, cookie_for: Any) -> dict[str, float]:
    workers: list[Worker] = []
    try:
        victim = _started(workers, env)
        survivor = _started(workers, env)
        cookie = cookie_for(survivor)
        clients = Clients("ws", [victim.port, survivor.port], subscribers, cookie, reconnect=True)
        time.sleep(SETTLE_SECONDS)
        stop = time.monotonic() + 20
        killed_at = 0.0
        while time.monotonic() < stop:
            survivor.touch_product()
            if not killed_at and time.monotonic() > stop - 15:
                victim.kill()
                killed_at = time.monotonic()
            time.sleep(KILL_PUBLISH_INTERVAL)
        time.sleep(SETTLE_SECONDS)
        logs = clients.logs()
        moved = [log for log in logs if log.lost_at]
        reference = max((log for log in logs if not log.lost_at), key=lambda log: len(log.events))
        canonical = [event_id for event_id, _ in reference.events]
        first_after = next(event_id for event_id, t in reference.events if t > killed_at)
        back, missed, duplicated = [], 0, 0
        for log in moved:
            ids = [event_id for event_id, _ in log.events]
            duplicated += len(ids) - len(set(ids))
            start = canonical.index(ids[0]) if ids and ids[0] in canonical else 0
            missed += len(set(canonical[start:]) - set(ids))
            caught = next((t for event_id, t in log.events if event_id == first_after), None)
            back.append((caught - killed_at) if caught is not None else float("inf"))
        return {
            "moved": len(moved),
            "p50_back": percentile(back, 0.5),
            "max_back": max(back),
            "missed": missed,
            "duplicated": duplicated,
        }
    finally:
        for worker in workers:
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=19_500, help="idle connections per transport (default 19500)")
    parser.add_argument("--fanout", type=int, default=10_000, help="fan-out subscribers over two workers")
    parser.add_argument("--runs", type=int, default=3, help="runs of the fan-out and the worker kill (default 3)")
    parser.add_argument(
        "--parts", default="idle,fanout,kill", help="which measurements, comma-separated (default idle,fanout,kill)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.idle + 100 > hard:
        sys.exit(f"--idle {args.idle}: a process may open {hard} files here (RLIMIT_NOFILE hard limit)")
    postgres = PostgresServer.primary()
    redis = RedisServer.start()
    try:
        dsn = postgres.create_database("bench")
        base = {"DATABASE_URL": dsn, "LOG_LEVEL": "warning"}
        subprocess.run([sys.executable, "-m", "sample", "migrate"], env={**os.environ, **base}, check=True)
        postgres.sql("INSERT INTO products (sku, name, price_cents, stock) VALUES ('sku-1', 'One', 100, 1)", "bench")
        env = {
            **base,
            "REDIS_URL": redis.url,
            "EVENTS_ENABLED": "true",
            "SESSIONS_ENABLED": "true",
            "COOKIE_SECURE": "false",
            "ACCESS_LOG": "false",
            "REALTIME_MAX_CONNECTIONS": str(max(args.idle, args.fanout) + 100),
        }
        users = iter(range(10**6))

        def cookie_for(worker: Worker) -> str:
            return worker.login(f"bench-{next(users)}-{os.getpid()}@example.com")

        print(f"RLIMIT_NOFILE hard limit per process: {hard}; CPUs: {os.cpu_count()}")
        for transport in ("ws", "ws-deflate", "sse") if "idle" in parts else ():
            r = idle(transport, env, args.idle, cookie_for)
            print(
                f"idle {transport:>10}: {r['connections']:,} held by one worker (server counts {r['server_counted']:,},"
                f" {r['alive']:,} got the last event), opened in {r['open_s']:.1f} s;"
                f" RSS {r['rss_before']:.0f} -> {r['rss_after']:.0f} MiB, {r['kib_per_connection']:.1f} KiB each,"
                f" 20,000 would be {r['rss_before'] + r['kib_per_connection'] * 20_000 / 1024:.0f} MiB"
            )
        fan = [fanout(env, args.fanout, 5, cookie_for) for _ in range(args.runs if "fanout" in parts else 0)]
        for n, r in enumerate(fan, 1):
            print(
                f"fan-out run {n}: {args.fanout:,} subscribers on two workers, {r['delivered']:,}/{r['expected']:,}"
                f" delivered; p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms, max {r['max']:.0f} ms"
                f" (one subscriber: p50 {r['single_p50']:.1f} ms; every client offering permessage-deflate:"
                f" p50 {r['deflate_p50']:.0f} ms, p99 {r['deflate_p99']:.0f} ms);"
                f" the bare fan-out server (fanout_ceiling.py): p50 {r['ceiling_p50']:.0f} ms,"
                f" p99 {r['ceiling_p99']:.0f} ms; the service's p99 is {r['p99'] / r['ceiling_p99']:.1f}x the"
                " ceiling's"
            )
        if fan:
            print(
                f"fan-out over {args.runs} runs: p50 median {statistics.median(r['p50'] for r in fan):.0f} ms,"
                f" p99 median {statistics.median(r['p99'] for r in fan):.0f} ms"
            )
        kills = [worker_kill(env, args.fanout, cookie_for) for _ in range(args.runs if "kill" in parts else 0)]
        for n, r in enumerate(kills, 1):
            print(
                f"worker kill run {n}: {r['moved']:,} clients moved; back and caught up p50 {r['p50_back']:.1f} s,"
                f" all {r['max_back']:.1f} s; missed {r['missed']}, duplicated {r['duplicated']}"
            )
    finally:
        redis.close()
        postgres.close()


if __name__ == "__main__":
    main()
