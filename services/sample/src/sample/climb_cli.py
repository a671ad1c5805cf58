"""`sample climb ...`: the data moves of climbing the ladder in place, one rung at a time (runnable as Jobs).

The kit runs each action as a Job from the sample image with the *target* rung's migration-Job env
(DATABASE_URL is the target primary, no pooler; DATABASE_PASSWORD_FILE; for shards SHARD_GROUPS,
SHARD_<i>_URL, ...). Every action is idempotent and resumable: run it again after a crash at any step.

    sample climb copy-database [--unfreeze]         1 -> 2: the in-pod Postgres into the StatefulSet
    sample climb move-sessions [--final]            3 -> 4: sessions and rate limits into the Redis Cluster
    sample climb adopt-shards [--finish | --unfreeze]   4 -> 5: main's users/orders into the shard groups

One action per entry of ACTIONS: its parser (`add_*`) and its runner (`run_*`), which returns
(exit status, output line). Exit 0 prints a one-line JSON report on stdout; 1 is a move that failed
(the old rung keeps serving), 2 a configuration error naming the variable, its value and what is allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from sample.climb_sessions import add_move_sessions, run_move_sessions
from sample.config import ConfigError, Settings
from sample.secretfiles import other_url
from sample.shards import ShardSettings

SOURCE_VARIABLE = "CLIMB_SOURCE_DATABASE_URL"
SOURCE_ALLOWED = (
    "the old rung's DSN postgresql://user@host:port/db, without a password"
    " (DATABASE_PASSWORD_FILE's goes into it), naming another database than DATABASE_URL"
)

Runner = Callable[[argparse.Namespace, Settings, "ShardSettings | None"], tuple[int, str]]
Parsers = argparse._SubParsersAction  # type: ignore[type-arg]


class ClimbError(Exception):
    """The move cannot start or did not verify; the message says why and what was left as it was."""


def source_database_url(env: Mapping[str, str], settings: Settings) -> str:
    """CLIMB_SOURCE_DATABASE_URL with DATABASE_PASSWORD_FILE's password in it; ConfigError naming each problem."""
    problems: list[str] = []
    schemes = ("postgresql://", "postgres://")
    target = ("DATABASE_URL", settings.database_url)
    url = other_url(env, SOURCE_VARIABLE, schemes, SOURCE_ALLOWED, "DATABASE_PASSWORD_FILE", target, problems)
    if problems:
        raise ConfigError.listing(problems)
    return url


# --- 1 -> 2: copy-database ---------------------------------------------------------------------------------------


def add_copy_database(actions: Parsers) -> None:
    parser = actions.add_parser(
        "copy-database",
        help="1 -> 2: freeze CLIMB_SOURCE_DATABASE_URL, copy every table into DATABASE_URL, verify, record",
    )
    parser.add_argument(
        "--unfreeze", action="store_true", help="give the source its writes back (abandoning the climb)"
    )


def run_copy_database(args: argparse.Namespace, settings: Settings, shards: ShardSettings | None) -> tuple[int, str]:
    from sample import climb_database

    try:
        source = source_database_url(os.environ, settings)
    except ConfigError as exc:
        return 2, f"sample climb copy-database: {exc}"
    work = climb_database.unfreeze if args.unfreeze else climb_database.copy_database
    return _report("copy-database", lambda: work(source, settings.database_url))


# --- 4 -> 5: adopt-shards ----------------------------------------------------------------------------------------


def add_adopt_shards(actions: Parsers) -> None:
    parser = actions.add_parser(
        "adopt-shards",
        help="4 -> 5: copy main's users, orders and items into their shard groups, freeze main's copies, verify",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--finish", action="store_true", help="after the web tier runs sharded: empty main's old copies")
    mode.add_argument(
        "--unfreeze", action="store_true", help="abandon the climb: main's users and orders take writes again"
    )


def run_adopt_shards(args: argparse.Namespace, settings: Settings, shards: ShardSettings | None) -> tuple[int, str]:
    from sample import climb_shards

    if shards is None:
        return 2, "sample climb adopt-shards: SHARD_GROUPS: not set, allowed: the shard groups' names (comma-separated)"
    groups = {group.name: group.url for group in shards.groups}
    if args.finish:
        return _report("adopt-shards", lambda: climb_shards.finish(settings.database_url))
    if args.unfreeze:
        return _report("adopt-shards", lambda: climb_shards.unfreeze(settings.database_url))
    return _report("adopt-shards", lambda: climb_shards.adopt(settings.database_url, groups))


# --- the command group -------------------------------------------------------------------------------------------

ACTIONS: dict[str, tuple[Callable[[Parsers], None], Runner]] = {
    "copy-database": (add_copy_database, run_copy_database),
    "adopt-shards": (add_adopt_shards, run_adopt_shards),
    "move-sessions": (add_move_sessions, run_move_sessions),
}


def add_commands(commands: Parsers) -> None:
    climb = commands.add_parser("climb", help="move a stack's data onto the next rung (run as Jobs, resumable)")
    actions = climb.add_subparsers(dest="action", required=True)
    for add, _ in ACTIONS.values():
        add(actions)


def main(args: argparse.Namespace, settings: Settings, shards: ShardSettings | None) -> tuple[int, str]:
    """Exit status and output of `sample climb ...`."""
    _, run = ACTIONS[args.action]
    return run(args, settings, shards)


def _report(action: str, work: Callable[[], Any]) -> tuple[int, str]:
    """0 and the JSON report of the coroutine `work()` makes, or 1 and the ClimbError's message."""
    try:
        return 0, json.dumps(asyncio.run(work()), default=str)
    except ClimbError as exc:
        return 1, f"sample climb {action}: {exc}"
