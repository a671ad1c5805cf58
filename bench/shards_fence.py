"""Benchmark of the shard write fence, every figure measured in this one run (a benchmark, not a test).

    uv run python bench/shards_fence.py [--transactions 2000] [--concurrency 8] [--rounds 3]

What a routed, fenced write (`Shards.write`: shared advisory lock + `shard_fence` read, then the
write) costs against the same write in a plain transaction (`Database.transaction`), on one real
PostgreSQL 15 server on loopback (a main database and one shard group's database). Each round runs
`--transactions` order inserts from `--concurrency` tasks, plain and fenced alternating; medians
of the rounds are printed as a table with the fenced/plain ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

from sample.config import load_settings
from sample.db import Database, Transaction
from sample.migrations import GROUP_SHARDING, MAIN_SHARDING, migrate
from sample.shards import ShardMap, Shards, seed_map, shard_settings

from testsupport.postgres import PostgresServer

INSERT = "INSERT INTO orders (id, user_id, total_cents) VALUES ($1, 1, 100)"
LOGICAL = 64


async def rate(transactions: int, concurrency: int, write: Callable[[int], Awaitable[None]]) -> float:
    """Transactions per second of `write(order_id)` over `concurrency` tasks."""
    ids = iter(range(transactions))

    async def worker() -> None:
        for order_id in ids:
            await write(order_id)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return transactions / (time.perf_counter() - started)


async def measure(server: PostgresServer, args: argparse.Namespace) -> dict[str, list[float]]:
    main_dsn, group_dsn = server.create_database("main"), server.create_database("group0")
    await migrate(main_dsn, MAIN_SHARDING)
    await migrate(group_dsn, GROUP_SHARDING)
    server.sql("INSERT INTO users (id, email, name, password_hash) VALUES (1, 'b@example.com', 'B', 'x')", "group0")
    shard_map = ShardMap(1, LOGICAL, ("pg-shard-0",), ("pg-shard-0",) * LOGICAL)
    env = {
        "DATABASE_URL": main_dsn,
        "DB_POOL_MAX": str(args.concurrency),
        "SHARD_GROUPS": "pg-shard-0",
        "SHARD_0_URL": group_dsn,
        "SHARD_MAP": json.dumps(shard_map.to_dict()),
    }
    settings, sharding = load_settings(env), shard_settings(env)
    assert sharding is not None
    main = Database(settings)
    shards = Shards(settings, sharding, main)
    await main.open()
    conn = await main.primary.acquire()  # type: ignore[union-attr]
    await seed_map(conn, shard_map, ["pg-shard-0"])
    await main.primary.release(conn)  # type: ignore[union-attr]
    await shards.open()
    group = shards.groups["pg-shard-0"]
    offset = iter(range(0, 10**9, args.transactions))

    async def insert(tx: Transaction, order_id: int) -> None:
        await tx.fetch(INSERT, order_id)

    results: dict[str, list[float]] = {"plain": [], "fenced": []}
    try:
        for _ in range(args.rounds):
            base = next(offset) * 2

            async def plain(n: int, base: int = base) -> None:
                async with group.transaction() as tx:
                    await insert(tx, base + n)

            async def fenced(n: int, base: int = base) -> None:
                await shards.write(n % LOGICAL, lambda tx: insert(tx, base + args.transactions + n))

            results["plain"].append(await rate(args.transactions, args.concurrency, plain))
            results["fenced"].append(await rate(args.transactions, args.concurrency, fenced))
    finally:
        await shards.close()
        await main.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = PostgresServer.primary()
    try:
        results = asyncio.run(measure(server, args))
    finally:
        server.close()
    plain, fenced = statistics.median(results["plain"]), statistics.median(results["fenced"])
    print(f"{args.rounds} rounds x {args.transactions} write transactions, {args.concurrency} concurrent, medians")
    print("| write path | tx/s (median) | rounds | fenced / plain |")
    print("|---|---|---|---|")
    for label, key, ratio in (
        ("plain transaction", "plain", ""),
        ("Shards.write (fence)", "fenced", f"{fenced / plain:.2f}"),
    ):
        rounds = ", ".join(f"{r:.0f}" for r in results[key])
        print(f"| {label} | {statistics.median(results[key]):.0f} | {rounds} | {ratio} |")


if __name__ == "__main__":
    main()
