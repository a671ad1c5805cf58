"""Secrets as files (`*_PASSWORD_FILE`, `ADMIN_TOKEN_FILE`): read exactly, percent-encoded into the URLs, every
problem named with its variable and value but never with the secret; against real servers, the password from
the file is the one that logs in."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from redis.connection import parse_url
from sample import redisconn
from sample.config import ConfigError, load_settings
from sample.secretfiles import mask, read_secret
from sample.shards import HASH, shard_settings
from sample_helpers import DATABASE, Service, run_sample, signup_and_login

from testsupport.postgres import PostgresServer, owned_tempdir
from testsupport.redis import RedisServer

DSN = "postgresql://app@db:5432/app"
SPECIAL = "p@ss:w/rd %#?&=+é"
"""A password with every character that means something in a URL."""
SECRET = "hunter2"
MISSING = (
    "DATABASE_PASSWORD_FILE: got '/nope', allowed: a readable file holding the password (No such file or directory)"
)
MAP = {"version": 1, "hash": HASH, "logical_shards": 2, "groups": ["a", "b"], "assignment": ["a", "b"]}
SHARDS = {
    "SHARD_GROUPS": "a,b",
    "SHARD_0_URL": "postgresql://app@a:5432/app",
    "SHARD_1_URL": "postgresql://app@b:5432/app",
    "SHARD_1_REPLICA_URLS": "postgresql://app@b-ro:5432/app",
    "SHARD_MAP": json.dumps(MAP),
}


def secret_file(tmp_path: Path, content: str | bytes, name: str = "password") -> str:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode())
    else:
        path.write_bytes(content)
    return str(path)


def problems(env: dict[str, str]) -> list[str]:
    """The lines of the ConfigError that `load_settings(env)` raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    header, *lines = str(caught.value).split("\n")
    assert header == "invalid environment:"
    return [line.removeprefix("  ") for line in lines]


def shard_problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        shard_settings(env)
    return [line.removeprefix("  ") for line in str(caught.value).split("\n")[1:]]


def test_database_password_file_goes_into_the_url_and_every_replica(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "DATABASE_URL": DSN,
            "DATABASE_REPLICA_URLS": "postgresql://app@r1/app, postgresql://app@r2:5433/app?sslmode=disable",
            "DATABASE_PASSWORD_FILE": secret_file(tmp_path, "s3cret\n"),
        }
    )
    assert settings.database_url == "postgresql://app:s3cret@db:5432/app"
    assert settings.database_replica_urls == (
        "postgresql://app:s3cret@r1/app",
        "postgresql://app:s3cret@r2:5433/app?sslmode=disable",
    )


def test_redis_password_file_goes_into_the_url_keeping_a_user_name(tmp_path: Path) -> None:
    env = {"DATABASE_URL": DSN, "REDIS_PASSWORD_FILE": secret_file(tmp_path, "pw\n")}
    assert load_settings({**env, "REDIS_URL": "redis://redis:6379/0"}).redis_url == "redis://:pw@redis:6379/0"
    assert load_settings({**env, "REDIS_URL": "redis://redis:6379"}).redis_url == "redis://:pw@redis:6379"
    assert load_settings({**env, "REDIS_URL": "rediss://app@redis:6379/0"}).redis_url == "rediss://app:pw@redis:6379/0"


def test_a_password_of_any_characters_is_percent_encoded_and_round_trips(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SPECIAL + "\n")
    settings = load_settings(
        {
            "DATABASE_URL": DSN,
            "DATABASE_PASSWORD_FILE": path,
            "REDIS_URL": "redis://redis:6379/0",
            "REDIS_PASSWORD_FILE": path,
        }
    )
    dsn = urlsplit(settings.database_url)
    assert (dsn.username, unquote(dsn.password or ""), dsn.hostname, dsn.port, dsn.path) == (
        "app",
        SPECIAL,
        "db",
        5432,
        "/app",
    )
    assert settings.database_url == "postgresql://app:p%40ss%3Aw%2Frd%20%25%23%3F%26%3D%2B%C3%A9@db:5432/app"
    redis = parse_url(settings.redis_url)  # what redis-py's from_url connects with
    assert (redis.get("username"), redis["password"], redis["host"], redis["port"], redis["db"]) == (
        None,
        SPECIAL,
        "redis",
        6379,
        0,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("pw\n", "pw"),
        ("pw\r\n", "pw"),
        ("pw", "pw"),
        ("pw\n\n", "pw\n"),
        ("pw\r\n\r\n", "pw\r\n"),
        ("pw\r", "pw\r"),
        (" pw \t\n", " pw \t"),
        ("\npw", "\npw"),
    ],
    ids=ascii,
)
def test_exactly_one_trailing_newline_is_stripped(tmp_path: Path, content: str, expected: str) -> None:
    found: list[str] = []
    assert read_secret({"X_FILE": secret_file(tmp_path, content)}, "X_FILE", "the password", found) == expected
    assert found == []


def test_the_stripped_password_is_what_goes_into_the_url(tmp_path: Path) -> None:
    env = {"DATABASE_URL": DSN, "DATABASE_PASSWORD_FILE": secret_file(tmp_path, " pw\n\n")}
    assert load_settings(env).database_url == "postgresql://app:%20pw%0A@db:5432/app"


def test_an_unset_or_empty_file_variable_is_no_file(tmp_path: Path) -> None:
    assert load_settings({"DATABASE_URL": DSN, "DATABASE_PASSWORD_FILE": ""}).database_url == DSN
    assert read_secret({}, "X_FILE", "the password", []) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file or directory"),
        ("", "the file is empty"),
        ("\n", "the file is empty"),
        ("\r\n", "the file is empty"),
        (b"\xff\xfepw", "not UTF-8 text"),
        ("x" * 65537, "larger than 65536 bytes"),
    ],
    ids=["missing", "empty", "newline only", "crlf only", "not utf-8", "too large"],
)
def test_an_unusable_password_file_names_the_variable_the_path_and_why(
    tmp_path: Path, content: str | bytes | None, reason: str
) -> None:
    path = str(tmp_path / "nope") if content is None else secret_file(tmp_path, content)
    assert problems({"DATABASE_URL": DSN, "DATABASE_PASSWORD_FILE": path}) == [
        f"DATABASE_PASSWORD_FILE: got {path!r}, allowed: a readable file holding the password ({reason})"
    ]


def test_a_directory_is_not_a_password_file(tmp_path: Path) -> None:
    assert problems({"DATABASE_URL": DSN, "DATABASE_PASSWORD_FILE": str(tmp_path)}) == [
        f"DATABASE_PASSWORD_FILE: got {str(tmp_path)!r}, allowed: a readable file holding the password (Is a directory)"
    ]


def test_a_missing_password_file_is_one_line_naming_it() -> None:
    assert problems({"DATABASE_URL": DSN, "DATABASE_PASSWORD_FILE": "/nope"}) == [MISSING]


@pytest.mark.parametrize(
    ("variable", "url", "file_variable", "shown"),
    [
        (
            "DATABASE_URL",
            f"postgresql://app:{SECRET}@db:5432/app",
            "DATABASE_PASSWORD_FILE",
            "postgresql://app:***@db:5432/app",
        ),
        (
            "DATABASE_URL",
            f"postgresql://app@db/app?password={SECRET}",
            "DATABASE_PASSWORD_FILE",
            "postgresql://app@db/app?password=***",
        ),
        (
            "DATABASE_REPLICA_URLS",
            f"postgresql://app:{SECRET}@r/app",
            "DATABASE_PASSWORD_FILE",
            "postgresql://app:***@r/app",
        ),
        ("REDIS_URL", f"redis://:{SECRET}@redis:6379/0", "REDIS_PASSWORD_FILE", "redis://:***@redis:6379/0"),
        ("REDIS_URL", f"redis://app:{SECRET}@redis:6379/0", "REDIS_PASSWORD_FILE", "redis://app:***@redis:6379/0"),
    ],
)
def test_a_url_with_a_password_and_its_file_are_exclusive(
    tmp_path: Path, variable: str, url: str, file_variable: str, shown: str
) -> None:
    env = {
        "DATABASE_URL": DSN,
        "REDIS_URL": "redis://redis:6379/0",
        variable: url,
        file_variable: secret_file(tmp_path, "pw"),
    }
    found = problems(env)
    assert found == [
        f"{variable}: got {shown!r}, allowed: a URL without a password while {file_variable} is set (one or the other)"
    ]
    assert SECRET not in "\n".join(found)


def test_a_replica_with_its_own_password_is_named_alone(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": DSN,
        "DATABASE_REPLICA_URLS": f"postgresql://app@r1/app,postgresql://app:{SECRET}@r2/app",
        "DATABASE_PASSWORD_FILE": secret_file(tmp_path, "pw"),
    }
    assert problems(env) == [
        "DATABASE_REPLICA_URLS: got 'postgresql://app:***@r2/app', allowed: a URL without a password while"
        " DATABASE_PASSWORD_FILE is set (one or the other)"
    ]


def test_redis_password_file_without_redis_url_is_an_error(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pw")
    assert problems({"DATABASE_URL": DSN, "REDIS_PASSWORD_FILE": path}) == [
        f"REDIS_PASSWORD_FILE: got {path!r}, allowed: unset while REDIS_URL is empty"
    ]


def test_the_plain_forms_keep_working_without_files() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": f"postgresql://app:{SECRET}@db/app",
            "DATABASE_REPLICA_URLS": f"postgresql://app:{SECRET}@r/app",
            "REDIS_URL": f"redis://:{SECRET}@redis:6379/0",
        }
    )
    assert settings.database_url == f"postgresql://app:{SECRET}@db/app"
    assert settings.database_replica_urls == (f"postgresql://app:{SECRET}@r/app",)
    assert settings.redis_url == f"redis://:{SECRET}@redis:6379/0"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        {
            "DATABASE_URL": f"postgresql://app:{SECRET}@db/app",
            "DATABASE_PASSWORD_FILE": "/nope",
            "REDIS_URL": "redis://redis:6379/0",
            "REDIS_PASSWORD_FILE": secret_file(tmp_path, "\n"),
            "PORT": "http",
        }
    )
    assert sorted(found) == [
        MISSING,
        "DATABASE_URL: got 'postgresql://app:***@db/app', allowed: a URL without a password while"
        " DATABASE_PASSWORD_FILE is set (one or the other)",
        "PORT: got 'http', allowed: an integer from 1 to 65535",
        f"REDIS_PASSWORD_FILE: got {str(tmp_path / 'password')!r}, allowed: a readable file holding the password"
        " (the file is empty)",
    ]


def test_no_password_is_in_any_message_about_a_bad_url() -> None:
    message = "\n".join(
        problems(
            {
                "DATABASE_URL": f"mysql://app:{SECRET}@db/app",
                "DATABASE_REPLICA_URLS": f"postgresql://app:{SECRET}@r1/app,mysql://app:{SECRET}@r2/app",
                "REDIS_URL": f"http://:{SECRET}@redis:6379",
            }
        )
    )
    assert SECRET not in message
    assert "DATABASE_URL: got 'mysql://app:***@db/app', allowed: a DSN postgresql://" in message
    assert "DATABASE_REPLICA_URLS: got 'postgresql://app:***@r1/app,mysql://app:***@r2/app', allowed:" in message
    assert "REDIS_URL: got 'http://:***@redis:6379', allowed:" in message


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://app:pw@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql://app@db:5432/app", "postgresql://app@db:5432/app"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("app:pw@db/app", "app:***@db/app"),
        ("postgresql://app:p@ss/w,rd@db/app", "postgresql://app:***@db/app"),
        ("postgresql://a:x@r1/app, postgresql://b:y@r2/app", "postgresql://a:***@r1/app, postgresql://b:***@r2/app"),
        ("postgresql://db/app?sslmode=require&password=pw@x", "postgresql://db/app?sslmode=require&password=***"),
        ("postgresql://app:pw@db/app?password=pw2", "postgresql://app:***@db/app?password=***"),
        ("", ""),
    ],
)
def test_mask_hides_every_password(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_shard_password_file_goes_into_the_group_url_and_its_replicas(tmp_path: Path) -> None:
    env = {
        **SHARDS,
        "SHARD_0_PASSWORD_FILE": secret_file(tmp_path, SPECIAL + "\r\n", "zero"),
        "SHARD_1_PASSWORD_FILE": secret_file(tmp_path, "one\n", "one"),
    }
    settings = shard_settings(env)
    assert settings is not None
    zero, one = settings.groups
    assert unquote(urlsplit(zero.url).password or "") == SPECIAL
    assert (one.url, one.replica_urls) == ("postgresql://app:one@b:5432/app", ("postgresql://app:one@b-ro:5432/app",))


def test_shard_password_file_problems_name_the_group_variables(tmp_path: Path) -> None:
    env = {
        **SHARDS,
        "SHARD_0_PASSWORD_FILE": "/nope",
        "SHARD_1_URL": f"postgresql://app:{SECRET}@b:5432/app",
        "SHARD_1_REPLICA_URLS": f"postgresql://app:{SECRET}@b-ro:5432/app",
        "SHARD_1_PASSWORD_FILE": secret_file(tmp_path, "one"),
    }
    found = shard_problems(env)
    assert found == [
        "SHARD_0_PASSWORD_FILE: got '/nope', allowed: a readable file holding the password (No such file or directory)",
        "SHARD_1_URL: got 'postgresql://app:***@b:5432/app', allowed: a URL without a password while"
        " SHARD_1_PASSWORD_FILE is set (one or the other)",
        "SHARD_1_REPLICA_URLS: got 'postgresql://app:***@b-ro:5432/app', allowed: a URL without a password while"
        " SHARD_1_PASSWORD_FILE is set (one or the other)",
    ]
    assert SECRET not in "\n".join(found)


def test_a_bad_shard_url_is_shown_without_its_password() -> None:
    found = shard_problems({**SHARDS, "SHARD_0_URL": f"mysql://app:{SECRET}@a/app"})
    assert found == [
        "SHARD_0_URL: got 'mysql://app:***@a/app', allowed: a DSN postgresql://user:pass@host:port/db (group a)"
    ]


def test_admin_token_comes_from_its_file(tmp_path: Path) -> None:
    settings = shard_settings({**SHARDS, "ADMIN_TOKEN_FILE": secret_file(tmp_path, "t0ken\n")})
    assert settings is not None and settings.admin_token == "t0ken"
    plain = shard_settings({**SHARDS, "ADMIN_TOKEN": "t0ken"})
    assert plain is not None and plain.admin_token == "t0ken"


def test_admin_token_and_its_file_are_exclusive_and_the_token_is_not_shown(tmp_path: Path) -> None:
    found = shard_problems({**SHARDS, "ADMIN_TOKEN": SECRET, "ADMIN_TOKEN_FILE": secret_file(tmp_path, "t0ken")})
    assert found == ["ADMIN_TOKEN: got '***', allowed: unset while ADMIN_TOKEN_FILE is set (one or the other)"]
    assert SECRET not in "\n".join(found) and "t0ken" not in "\n".join(found)


def test_an_unreadable_admin_token_file_is_named() -> None:
    assert shard_problems({**SHARDS, "ADMIN_TOKEN_FILE": "/nope"}) == [
        "ADMIN_TOKEN_FILE: got '/nope', allowed: a readable file holding the token (No such file or directory)"
    ]


def test_serve_reports_the_problems_of_settings_and_shard_settings_together(tmp_path: Path) -> None:
    result = run_sample(
        "serve",
        {
            **SHARDS,
            "DATABASE_URL": DSN,
            "DATABASE_PASSWORD_FILE": "/nope",
            "SHARD_0_PASSWORD_FILE": "/nope/zero",
            "ADMIN_TOKEN": SECRET,
            "ADMIN_TOKEN_FILE": secret_file(tmp_path, "t0ken"),
        },
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "sample serve: invalid environment:"
    assert sorted(line.strip() for line in lines[1:]) == [
        "ADMIN_TOKEN: got '***', allowed: unset while ADMIN_TOKEN_FILE is set (one or the other)",
        MISSING,
        "SHARD_0_PASSWORD_FILE: got '/nope/zero', allowed: a readable file holding the password"
        " (No such file or directory)",
    ]
    assert SECRET not in result.stderr


# Against real servers: Postgres trusts only its superuser, role `app` logs in with scram-sha-256, and
# Redis requires a password of its default user and of user `app`; all of them are SPECIAL.

HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


@pytest.fixture(scope="module")
def scram_postgres() -> Iterator[PostgresServer]:
    """A primary (its own hba_file, the server's data untouched) with role `app` owning database `sample`."""
    hba_dir = owned_tempdir("pg-hba-")
    (hba_dir / "pg_hba.conf").write_text(HBA)
    server = None
    try:
        hba = {"hba_file": str(hba_dir / "pg_hba.conf"), "password_encryption": "scram-sha-256"}
        server = PostgresServer.primary(hba)
        server.sql(f"CREATE ROLE app LOGIN PASSWORD '{SPECIAL}'")  # SPECIAL has no quote
        server.sql(f'CREATE DATABASE "{DATABASE}" OWNER app')
        yield server
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(hba_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def auth_redis() -> Iterator[RedisServer]:
    """A redis-server whose default user and user `app` need the password SPECIAL."""
    server = RedisServer.start()
    try:
        assert server.command("ACL", "SETUSER", "app", "on", f">{SPECIAL}", "~*", "&*", "+@all") == "OK"
        assert server.command("CONFIG", "SET", "requirepass", SPECIAL) == "OK"  # redis-cli cannot talk to it after this
        yield server
    finally:
        server.close()


def app_dsn(server: PostgresServer) -> str:
    return server.dsn(DATABASE, user="app")  # no password in it


async def current_user(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


async def redis_ping(url: str) -> bool:
    client = redisconn.connect(url, "standalone")
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


@pytest.mark.integration
def test_migrate_and_serve_log_in_with_the_passwords_from_the_files(
    scram_postgres: PostgresServer, auth_redis: RedisServer, tmp_path: Path
) -> None:
    password = secret_file(tmp_path, SPECIAL + "\n")
    env = {"DATABASE_URL": app_dsn(scram_postgres), "DATABASE_PASSWORD_FILE": password}
    migrated = run_sample("migrate", env)
    assert migrated.returncode == 0, migrated.stderr
    assert scram_postgres.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'products'", DATABASE) == "app"
    service = Service(
        {
            **env,
            "DATABASE_REPLICA_URLS": app_dsn(scram_postgres),
            "REDIS_URL": auth_redis.url,
            "REDIS_PASSWORD_FILE": password,
            "SESSIONS_ENABLED": "true",
        }
    )
    try:
        ready = service.client().get("/readyz")
        assert ready.status == 200, ready.body
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "replicas_healthy": "1/1"}
        client, _ = signup_and_login(service)  # a row written as `app`, a session stored in Redis
        assert client.get("/me").status == 200
    finally:
        service.stop()
    assert SPECIAL not in service.output()
    # a user name in REDIS_URL is kept: user `app` logs in with the file's password
    named = load_settings(
        {**env, "REDIS_URL": auth_redis.url.replace("redis://", "redis://app@"), "REDIS_PASSWORD_FILE": password}
    )
    assert asyncio.run(redis_ping(named.redis_url))


@pytest.mark.integration
def test_a_wrong_or_missing_password_is_refused(
    scram_postgres: PostgresServer, auth_redis: RedisServer, tmp_path: Path
) -> None:
    right = secret_file(tmp_path, SPECIAL + "\n", "right")
    wrong = secret_file(tmp_path, f"{SECRET}\n", "wrong")
    for env in ({"DATABASE_PASSWORD_FILE": wrong}, {}):
        result = run_sample("migrate", {"DATABASE_URL": app_dsn(scram_postgres), **env})
        assert result.returncode != 0
        assert 'password authentication failed for user "app"' in result.stderr, result.stderr
        assert SECRET not in result.stderr
    database = {"DATABASE_URL": app_dsn(scram_postgres), "DATABASE_PASSWORD_FILE": right}
    for env in ({"REDIS_PASSWORD_FILE": wrong}, {}):
        service = Service({**database, "REDIS_URL": auth_redis.url, **env})
        try:
            ready = service.client().get("/readyz")
        finally:
            service.stop()
        assert ready.status == 503
        checks = ready.json()["checks"]
        assert checks["postgres"] == "ok" and checks["redis"].startswith("down: AuthenticationError"), checks
        assert SECRET not in service.output() and SECRET not in ready.body.decode()


@pytest.mark.integration
def test_shard_groups_log_in_with_their_password_files(scram_postgres: PostgresServer, tmp_path: Path) -> None:
    dsn = app_dsn(scram_postgres)
    groups = {"SHARD_0_URL": dsn, "SHARD_1_URL": dsn, "SHARD_1_REPLICA_URLS": dsn}
    right = secret_file(tmp_path, SPECIAL + "\r\n", "right")
    settings = shard_settings({**SHARDS, **groups, "SHARD_0_PASSWORD_FILE": right, "SHARD_1_PASSWORD_FILE": right})
    assert settings is not None
    urls = [settings.groups[0].url, settings.groups[1].url, *settings.groups[1].replica_urls]
    assert [asyncio.run(current_user(url)) for url in urls] == ["app", "app", "app"]
    wrong = shard_settings({**SHARDS, **groups, "SHARD_0_PASSWORD_FILE": secret_file(tmp_path, SECRET, "wrong")})
    assert wrong is not None
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(current_user(wrong.groups[0].url))
