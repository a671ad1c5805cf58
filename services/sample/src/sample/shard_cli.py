"""`sample migrate` over every group, and `sample shards move | status | plan` (runnable as Jobs).

Give these commands the primaries themselves (the migration Job's env: `-rw` Services), not a
transaction pooler: migrations and moves hold session-level advisory locks.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import asyncpg

from sample.config import Settings
from sample.migrations import GROUP_SHARDING, MAIN_SHARDING, migrate
from sample.shard_move import MoveError, move
from sample.shards import ShardSettings, latest_map, rebalance, seed_map

DEFAULT_DRAIN_SECONDS = 5.0
"""More than twice the default SHARD_MAP_REFRESH_SECONDS (2 s)."""


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    shards = commands.add_parser("shards", help="shard map: status, plan a new group, move a logical shard")
    actions = shards.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="print the live shard map and the logical shards per group")
    plan = actions.add_parser("plan", help="print the logical shards to move onto a new group (nothing else moves)")
    plan.add_argument("--add", required=True, metavar="GROUP")
    moving = actions.add_parser("move", help="move one logical shard to another group (copy, freeze, verify, switch)")
    moving.add_argument("--logical", type=int, required=True, metavar="N")
    moving.add_argument("--to", required=True, metavar="GROUP")
    moving.add_argument("--drain-seconds", type=float, default=DEFAULT_DRAIN_SECONDS, metavar="S")


async def migrate_all(settings: Settings, shards: ShardSettings | None) -> dict[str, list[int]]:
    """The main group, then (when sharded) its map seeded and every shard group; versions applied per group."""
    if shards is None:
        return {"main": await migrate(settings.database_url)}
    applied = {"main": await migrate(settings.database_url, MAIN_SHARDING)}
    conn = await asyncpg.connect(settings.database_url)
    try:
        await seed_map(conn, shards.initial_map, shards.names())
    finally:
        await conn.close()
    for group in shards.groups:
        applied[group.name] = await migrate(group.url, GROUP_SHARDING)
    return applied


async def run(args: argparse.Namespace, settings: Settings, shards: ShardSettings) -> str:
    """The `sample shards` action's report (JSON); MoveError for a move that cannot be done."""
    if args.action == "move":
        urls = {group.name: group.url for group in shards.groups}
        report = await move(settings.database_url, urls, args.logical, args.to, drain_seconds=args.drain_seconds)
        return json.dumps(report, default=str)
    conn = await asyncpg.connect(settings.database_url)
    try:
        current = await latest_map(conn)
    finally:
        await conn.close()
    if current is None:
        raise MoveError("no shard map in the main group: run `sample migrate` first")
    if args.action == "plan":
        return json.dumps({"version": current.version, "add": args.add, "move": rebalance(current, args.add)})
    owned = current.owned()
    return json.dumps({"version": current.version, "logical_shards": current.logical_shards, "owned": owned})


def main(args: argparse.Namespace, settings: Settings, shards: ShardSettings | None) -> tuple[int, str]:
    """Exit status and output of `sample shards ...`."""
    if shards is None:
        return 2, "sample shards: SHARD_GROUPS: not set, allowed: the shard groups' names (comma-separated)"
    try:
        return 0, asyncio.run(run(args, settings, shards))
    except MoveError as exc:
        return 1, f"sample shards {args.action}: {exc}"
