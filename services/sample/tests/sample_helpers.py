"""Helpers for the sample service tests: an HTTP client with cookies, /metrics parsing, and the
service run as `sample serve` (or `sample migrate`) child processes."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from testsupport.postgres import PostgresServer
from testsupport.process import LOOPBACK, free_port
from testsupport.redis import RedisServer

DATABASE = "sample"
TABLES = "order_items, orders, products, users"
PASSWORD = "correct horse"


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The message of an API error body."""
        return self.json()["error"]["message"]


@dataclass
class Client:
    """A tiny HTTP/1.1 client with a cookie jar, so tests read exactly what the server sent."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        sent = dict(headers or {})
        if body is not None or raw is not None:
            sent.setdefault("content-type", "application/json")
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=raw if raw is not None else _encode(body), headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.getheaders(), response.read())
        finally:
            conn.close()
        for cookie in reply.headers_named("set-cookie"):
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if value and "max-age=0" not in cookie.lower():
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("PATCH", path, body, **kw)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of metric `name` whose labels include `labels`, from /metrics."""
        return metric_value(self.get("/metrics").body.decode(), name, **labels)


def _encode(body: Any) -> bytes | None:
    return None if body is None else json.dumps(body).encode()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


class Service:
    """`sample serve` as a child process on a free loopback port; `stop()` sends SIGTERM and waits."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="sample-", suffix=".log")[1])
        self.env = {**os.environ, "PORT": str(self.port), "COOKIE_SECURE": "false", **env}
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sample", "serve"], env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sample serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.client().get("/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sample serve not healthy after {timeout}s:\n{self.output()}")

    def client(self) -> Client:
        return Client(self.port)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def run_sample(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m sample COMMAND` to completion with exactly `env` added to a minimal environment."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return subprocess.run(
        [sys.executable, "-m", "sample", command], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


@dataclass
class Postgres:
    primary: PostgresServer
    replica: PostgresServer

    @property
    def dsn(self) -> str:
        return self.primary.dsn(DATABASE)

    @property
    def replica_dsn(self) -> str:
        return self.replica.dsn(DATABASE)

    def sql(self, statement: str) -> str:
        return self.primary.sql(statement, DATABASE)

    def replicated(self) -> None:
        self.primary.wait_replayed(self.replica)


def reset(postgres: Postgres, redis: RedisServer) -> None:
    """Empty tables (ids restart at 1) and Redis, and let the replica catch up."""
    postgres.sql(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    redis.command("FLUSHALL")
    postgres.replicated()


def conforms(spec: dict[str, Any], schema: str | dict[str, Any], value: Any) -> bool:
    """True when `value` is valid against `schema` of the OpenAPI document `spec`: a schema whose $refs point
    into its components, or the name of one, `#/components/schemas/<schema>`."""
    root = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return jsonschema.Draft202012Validator({**root, "components": spec["components"]}).is_valid(value)


def signup_and_login(service: Service, email: str = "ada@example.com") -> tuple[Client, int]:
    """A client logged in as a new user (password PASSWORD), and the user's id."""
    client = service.client()
    created = client.post("/users", {"email": email, "name": "Ada", "password": PASSWORD})
    assert created.status == 201, created.body
    login = client.post("/sessions", {"email": email.upper(), "password": PASSWORD})
    assert login.status == 201, login.body
    return client, created.json()["id"]


def seed_products(postgres: Postgres, count: int) -> None:
    """`count` products with ids 1..count, stock 1000 each, replicated before returning."""
    postgres.sql(
        "INSERT INTO products (sku, name, description, price_cents, stock)"
        f" SELECT 'sku-' || g, 'Product ' || g, 'A product', 100 * g, 1000 FROM generate_series(1, {count}) g"
    )
    postgres.replicated()


class EventStream:
    """A GET /events Server-Sent Events stream; `next()` returns the next frame's fields."""

    def __init__(self, port: int, last_event_id: str | None = None, timeout: float = 10.0) -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
        headers = {"accept": "text/event-stream"}
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        self.conn.request("GET", "/events", headers=headers)
        self.response = self.conn.getresponse()

    def next(self) -> dict[str, str]:
        """Fields of the next frame ("comment" for `: ...` lines); {} when the server ended the stream."""
        frame: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return frame
            text = line.decode().rstrip("\n")
            if not text:
                if frame:
                    return frame
                continue
            name, _, value = text.partition(":")
            frame[name or "comment"] = value.strip()

    def next_change(self) -> dict[str, Any]:
        """The next `change` event (skipping heartbeats and the retry hint) as {"id", "type", "data"}."""
        while True:
            frame = self.next()
            if not frame:
                raise EOFError("stream ended")
            if frame.get("event") == "change":
                return {"id": frame["id"], **json.loads(frame["data"])}

    def close(self) -> None:
        self.conn.close()
