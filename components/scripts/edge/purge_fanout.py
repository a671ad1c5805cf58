"""Send one invalidation to every edge-cache replica; exit 0 only if every replica accepted it.

Usage:
    purge_fanout.py purge PATH [--host HOST]      drop one URL (PATH as clients request it)
    purge_fanout.py ban [--prefix P]... [--tag T]...  ban path prefixes and/or surrogate keys

Replicas (one of):
    EDGE_CACHE_ADDRESSES     comma-separated host:port list, used as given
    EDGE_CACHE_PEERS         DNS name of the headless Service: every A record is a replica,
                             reached on EDGE_CACHE_PURGE_PORT (default 8081)
Tuning:
    EDGE_CACHE_WAIT_SECONDS  wait this long for the DNS name to list a replica (default 0)
    EDGE_CACHE_TIMEOUT_SECONDS  per-request timeout (default 5)

Connection failures and 5xx answers are retried three times; a 4xx (refused by the cache's ACL,
malformed request) is final. One line per replica and request goes to stdout.
Only the Python standard library is used, so any pinned Python image runs it.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import sys
import time

ATTEMPTS = 3
BACKOFF_SECONDS = 0.5


class ConfigError(Exception):
    """The environment or arguments do not say what to do; exit status 2."""


def parse_addresses(raw: str) -> list[tuple[str, int]]:
    addresses = []
    for item in raw.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"EDGE_CACHE_ADDRESSES: expected host:port items, got {item.strip()!r}")
        addresses.append((host, int(port)))
    return addresses


def resolve(name: str, port: int, wait_seconds: float) -> list[tuple[str, int]]:
    """Every IPv4 address of `name`, waiting up to `wait_seconds` for at least one to appear."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)
            return sorted({(str(info[4][0]), port) for info in infos})
        except socket.gaierror as error:
            if time.monotonic() >= deadline:
                raise ConfigError(f"EDGE_CACHE_PEERS: {name!r} lists no replica ({error})") from error
            time.sleep(1.0)


def replicas() -> list[tuple[str, int]]:
    explicit = os.environ.get("EDGE_CACHE_ADDRESSES", "").strip()
    if explicit:
        return parse_addresses(explicit)
    name = os.environ.get("EDGE_CACHE_PEERS", "").strip()
    if not name:
        raise ConfigError("set EDGE_CACHE_PEERS (headless Service DNS name) or EDGE_CACHE_ADDRESSES (host:port,...)")
    port = os.environ.get("EDGE_CACHE_PURGE_PORT", "8081")
    if not port.isdigit():
        raise ConfigError(f"EDGE_CACHE_PURGE_PORT: expected a port number, got {port!r}")
    return resolve(name, int(port), float(os.environ.get("EDGE_CACHE_WAIT_SECONDS", "0")))


def requests(args: argparse.Namespace) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, headers) of every invalidation asked for."""
    if args.command == "purge":
        headers = {"Host": args.host} if args.host else {}
        return [("PURGE", args.path, headers)]
    if not args.prefix and not args.tag:
        raise ConfigError("ban: give at least one --prefix or --tag")
    return [("BAN", "/", {"X-Ban-Prefix": prefix}) for prefix in args.prefix] + [
        ("BAN", "/", {"X-Ban-Tag": tag}) for tag in args.tag
    ]


def send(address: tuple[str, int], method: str, path: str, headers: dict[str, str], timeout: float) -> str | None:
    """None when the replica accepted the request, else why not (after retries where retrying helps)."""
    host, port = address
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF_SECONDS * attempt)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            response.read()
        except OSError as error:
            problem = f"{type(error).__name__}: {error}"
            continue
        finally:
            conn.close()
        if response.status == 200:
            return None
        problem = f"{response.status} {response.reason}"
        if response.status < 500:
            return problem
    return problem


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Invalidate every edge-cache replica.")
    commands = parser.add_subparsers(dest="command", required=True)
    purge = commands.add_parser("purge", help="drop one URL")
    purge.add_argument("path")
    purge.add_argument("--host", help="Host header the URL was requested with")
    ban = commands.add_parser("ban", help="ban path prefixes and/or surrogate keys")
    ban.add_argument("--prefix", action="append", default=[], help="path prefix, e.g. /static/")
    ban.add_argument("--tag", action="append", default=[], help="surrogate key, as in the Surrogate-Key header")
    args = parser.parse_args(argv)
    try:
        todo = requests(args)
        targets = replicas()
        timeout = float(os.environ.get("EDGE_CACHE_TIMEOUT_SECONDS", "5"))
    except (ConfigError, ValueError) as error:
        print(f"purge_fanout: {error}", file=sys.stderr)
        return 2
    failed = 0
    for address in targets:
        for method, path, headers in todo:
            problem = send(address, method, path, headers, timeout)
            detail = " ".join(f"{key}={value}" for key, value in headers.items())
            outcome = "ok" if problem is None else f"FAILED ({problem})"
            print(f"{address[0]}:{address[1]} {method} {path} {detail} -> {outcome}".replace("  ", " "), flush=True)
            failed += problem is not None
    print(f"{len(targets)} replica(s), {len(todo)} request(s) each, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
