"""The `sample` command: `sample serve` (the image's default), `sample worker` (the job worker role),
`sample migrate` (the migration Job) and `sample listen` (the reference WebSocket client)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from sample import climb_cli, logs, realtime_client, shard_cli
from sample.config import ConfigError, Settings, load_settings
from sample.shards import ShardSettings, shard_settings

log = logging.getLogger("sample")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sample", description="scaleladder sample service")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve HTTP on LISTEN_ADDRESS:PORT (default 0.0.0.0:8080)")
    commands.add_parser("worker", help="consume jobs from NATS (ROLE=worker); serves only probes and metrics on PORT")
    commands.add_parser("migrate", help="apply pending schema migrations to DATABASE_URL and shard groups (idempotent)")
    shard_cli.add_commands(commands)
    climb_cli.add_commands(commands)
    listen = commands.add_parser("listen", help="print the events of a /ws as JSON lines, reconnecting and resuming")
    listen.add_argument("--url", required=True, help="the WebSocket URL, ws://HOST:PORT/ws")
    listen.add_argument("--cookie", required=True, help="the session id: the value of the `sid` cookie")
    listen.add_argument("--topics", required=True, help="comma-separated: products, product:<id>, orders")
    args = parser.parse_args(argv)
    if args.command == "listen":
        return _listen(args)
    if args.command == "worker" and os.environ.setdefault("ROLE", "worker") != "worker":
        print(f"sample worker: ROLE: got {os.environ['ROLE']!r}, allowed: worker (or unset)", file=sys.stderr)
        return 2
    try:
        settings, shards = environment()
    except ConfigError as exc:
        print(f"sample {args.command}: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if args.command == "migrate":
        try:
            applied = asyncio.run(shard_cli.migrate_all(settings, shards))
        except ConfigError as exc:  # the stored shard map needs a group the environment lacks
            print(f"sample migrate: {exc}", file=sys.stderr)
            return 2
        log.info("schema is current", extra={"applied": applied if shards else applied["main"]})
        return 0
    if args.command in ("shards", "climb"):
        status, output = (shard_cli if args.command == "shards" else climb_cli).main(args, settings, shards)
        print(output, file=sys.stdout if status == 0 else sys.stderr)
        return status
    from sample.server import serve

    serve(settings)
    return 0


def _listen(args: argparse.Namespace) -> int:
    """Runs until interrupted; 2 when the server refuses the handshake for good (bad topics, no session)."""
    logs.configure("info")
    topics = [topic.strip() for topic in args.topics.split(",") if topic.strip()]
    try:
        asyncio.run(realtime_client.listen(args.url, args.cookie, topics))
    except realtime_client.Refused as exc:
        print(f"sample listen: refused: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def environment() -> tuple[Settings, ShardSettings | None]:
    """The settings and the shard settings; one ConfigError listing the problems of both."""
    problems: list[str] = []
    try:
        settings = load_settings()
    except ConfigError as exc:
        problems += exc.problems
    try:
        shards = shard_settings(os.environ)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError.listing(problems)
    return settings, shards


if __name__ == "__main__":
    sys.exit(main())
