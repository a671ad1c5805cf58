"""Shard settings from the environment and the shard map's checks: every problem named with its value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sample.config import ConfigError
from sample.shards import HASH, ShardMap, ShardMapError, logical_shard, merge_newest_first, shard_settings

MAP = {"version": 1, "hash": HASH, "logical_shards": 4, "groups": ["a", "b"], "assignment": ["a", "b", "a", "b"]}
ENV = {
    "SHARD_GROUPS": "a,b",
    "SHARD_0_URL": "postgresql://app@a:5432/app",
    "SHARD_1_URL": "postgresql://app@b:5432/app",
    "SHARD_1_REPLICA_URLS": "postgresql://app@b-ro:5432/app",
    "SHARD_MAP": json.dumps(MAP),
}


def problems(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        shard_settings(env)
    return str(caught.value)


def test_no_shard_groups_means_unsharded() -> None:
    assert shard_settings({}) is None


def test_groups_urls_and_map_load() -> None:
    settings = shard_settings({**ENV, "SHARD_MAP_REFRESH_SECONDS": "0.5", "ADMIN_TOKEN": "t"})
    assert settings is not None
    assert settings.names() == ["a", "b"] and settings.groups[1].replica_urls == ("postgresql://app@b-ro:5432/app",)
    assert settings.initial_map.group_of(3) == "b" and settings.refresh_seconds == 0.5


def test_every_bad_variable_is_reported_at_once() -> None:
    message = problems({**ENV, "SHARD_1_URL": "mysql://b", "SHARD_MAP_REFRESH_SECONDS": "0"})
    assert "SHARD_1_URL: got 'mysql://b', allowed: a DSN postgresql://user:pass@host:port/db (group b)" in message
    assert "SHARD_MAP_REFRESH_SECONDS: got '0', allowed: 0.05 to 60 seconds" in message


def test_map_groups_must_be_configured() -> None:
    message = problems({**ENV, "SHARD_GROUPS": "a", "SHARD_1_URL": ""})
    assert "SHARD_MAP: groups ['b'] are not in SHARD_GROUPS (a)" in message


def test_map_file_is_read_when_no_inline_map(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "SHARD_MAP"}
    (tmp_path / "map.json").write_text(json.dumps(MAP))
    settings = shard_settings({**env, "SHARD_MAP_FILE": str(tmp_path / "map.json")})
    assert settings is not None and settings.initial_map == ShardMap.from_dict(MAP, "m")
    assert "SHARD_MAP: not set, allowed: the shard map JSON (or SHARD_MAP_FILE: its path)" in problems(env)
    assert "SHARD_MAP_FILE: got '/nonexistent/map.json', allowed: a readable file" in problems(
        {**env, "SHARD_MAP_FILE": "/nonexistent/map.json"}
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"hash": "crc32"}, f"m: hash: got 'crc32', allowed: {HASH!r}"),
        ({"version": 0}, "m: version: got 0, allowed: an integer >= 1"),
        ({"logical_shards": 2000}, "m: logical_shards: got 2000, allowed: an integer from 1 to 1024"),
        ({"assignment": ["a"]}, "m: assignment: got ['a'], allowed: a list of 4 group names, one per logical shard"),
        ({"assignment": ["a", "b", "c", "a"]}, "m: assignment[2]: got 'c', allowed: one of groups ['a', 'b']"),
        ({"groups": ["A_b"]}, "m: groups: got ['A_b'], allowed: a non-empty list of group names (DNS labels)"),
    ],
)
def test_bad_maps_name_the_key_and_value(change: dict[str, object], expected: str) -> None:
    with pytest.raises(ShardMapError) as caught:
        ShardMap.parse(json.dumps({**MAP, **change}), "m")
    assert str(caught.value) == expected


def test_a_move_is_a_new_version_with_one_assignment_changed() -> None:
    current = ShardMap.from_dict(MAP, "m")
    moved = current.moved(2, "c")
    assert moved.version == 2 and moved.groups == ("a", "b", "c")
    assert [n for n in range(4) if moved.group_of(n) != current.group_of(n)] == [2]
    assert ShardMap.parse(json.dumps(moved.to_dict()), "round trip") == moved


def test_the_hash_is_fixed() -> None:
    """Pinned values: changing the hash would send every existing user to the wrong shard."""
    assert [logical_shard(user, 64) for user in (1, 2, 3, 1000, -1)] == [21, 53, 18, 13, 4]
    # user 1: sha256 of 00 00 00 00 00 00 00 01 starts with cd2662, ...; 0xcd2662.. mod 64 = 21
    assert (
        int.from_bytes(bytes.fromhex("cd2662154e6d76b2b2b92e70c0cac3ccf534f9b74eb5b89819ec509083d00a50")[:4]) % 64 == 21
    )


def test_k_way_merge_takes_the_newest_over_all_pages() -> None:
    pages = [[{"id": 9}, {"id": 4}, {"id": 1}], [{"id": 8}, {"id": 7}], [], [{"id": 5}]]
    assert [r["id"] for r in merge_newest_first(pages, 4)] == [9, 8, 7, 5]  # type: ignore[arg-type]
