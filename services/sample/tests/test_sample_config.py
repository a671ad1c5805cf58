"""Environment validation: every bad variable reported at once, with the value and what is allowed."""

from __future__ import annotations

import socket

import pytest
from sample.config import ConfigError, Settings, load_settings
from sample_helpers import Postgres, Service, run_sample

DSN = "postgresql://app:secret@db:5432/app"


def test_defaults_need_only_a_database() -> None:
    settings = load_settings({"DATABASE_URL": DSN})
    assert settings == Settings(database_url=DSN)
    assert (settings.port, settings.web_concurrency, settings.redis_url, settings.cache_enabled) == (8080, 1, "", False)


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": DSN,
            "DATABASE_REPLICA_URLS": "postgresql://r1/app, postgresql://r2/app,",
            "REDIS_URL": "redis://cache:6379/0",
            "REDIS_MODE": "cluster",
            "CACHE_ENABLED": "yes",
            "RATE_LIMIT_ALGORITHM": "sliding_window",
            "WEB_CONCURRENCY": "2",
        }
    )
    assert settings.database_replica_urls == ("postgresql://r1/app", "postgresql://r2/app")
    assert (settings.redis_mode, settings.cache_enabled, settings.rate_limit_algorithm) == (
        "cluster",
        True,
        "sliding_window",
    )
    assert settings.web_concurrency == 2


def test_every_bad_variable_is_listed_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "DATABASE_URL": "mysql://x",
                "PORT": "99999",
                "CACHE_ENABLED": "maybe",
                "REDIS_MODE": "sentinel",
                "DB_POOL_MIN": "20",
                "DB_POOL_MAX": "5",
                "CACHE_REFRESH_AHEAD_PERCENT": "95",
                "CACHE_STALE_SECONDS": "-1",
            }
        )
    message = str(caught.value)
    assert "CACHE_REFRESH_AHEAD_PERCENT: got '95', allowed: an integer from 0 to 90" in message
    assert "CACHE_STALE_SECONDS: got '-1', allowed: 0 to 86400 seconds" in message
    assert "DATABASE_URL: got 'mysql://x', allowed: a DSN postgresql://" in message
    assert "PORT: got '99999', allowed: an integer from 1 to 65535" in message
    assert "CACHE_ENABLED: got 'maybe', allowed: true or false" in message
    assert "REDIS_MODE: got 'sentinel', allowed: standalone or cluster" in message
    assert "DB_POOL_MIN: got 20, allowed: at most DB_POOL_MAX (5)" in message


def test_realtime_cap_and_drain_batches_default_and_parse() -> None:
    defaults = load_settings({"DATABASE_URL": DSN})
    assert (defaults.realtime_max_connections, defaults.drain_batch_percent, defaults.drain_batch_interval_ms) == (
        10000,
        10,
        1000,
    )
    settings = load_settings(
        {
            "DATABASE_URL": DSN,
            "REALTIME_MAX_CONNECTIONS": "1000000",
            "DRAIN_BATCH_PERCENT": "100",
            "DRAIN_BATCH_INTERVAL_MS": "0",
        }
    )
    assert (settings.realtime_max_connections, settings.drain_batch_percent, settings.drain_batch_interval_ms) == (
        1000000,
        100,
        0,
    )


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("REALTIME_MAX_CONNECTIONS", "0", "an integer from 1 to 1000000"),
        ("REALTIME_MAX_CONNECTIONS", "1000001", "an integer from 1 to 1000000"),
        ("DRAIN_BATCH_PERCENT", "0", "an integer from 1 to 100"),
        ("DRAIN_BATCH_PERCENT", "ten", "an integer from 1 to 100"),
        ("DRAIN_BATCH_INTERVAL_MS", "-1", "0 to 60000 ms"),
        ("DRAIN_BATCH_INTERVAL_MS", "60001", "0 to 60000 ms"),
        ("WS_COMPRESSION", "gzip", "true or false (also 1/0, yes/no, on/off)"),
    ],
)
def test_a_bad_realtime_setting_names_the_variable_value_and_range(name: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATABASE_URL": DSN, name: value})
    assert caught.value.problems == [f"{name}: got {value!r}, allowed: {allowed}"]


def test_listen_address_defaults_to_every_interface_and_takes_one_ip() -> None:
    assert load_settings({"DATABASE_URL": DSN}).listen_address == "0.0.0.0"
    assert load_settings({"DATABASE_URL": DSN, "LISTEN_ADDRESS": " ::1 "}).listen_address == "::1"
    for bad in ("localhost", "0.0.0.0:8080", "256.0.0.1", ""):
        with pytest.raises(ConfigError) as caught:
            load_settings({"DATABASE_URL": DSN, "LISTEN_ADDRESS": bad})
        assert str(caught.value) == (
            f"invalid environment:\n  LISTEN_ADDRESS: got {bad!r}, allowed: an IPv4 or IPv6 address,"
            " e.g. 0.0.0.0, 127.0.0.1 or ::"
        )


def test_serve_listens_only_on_listen_address(postgres: Postgres) -> None:
    service = Service({"DATABASE_URL": postgres.dsn, "LISTEN_ADDRESS": "127.0.0.1"})
    try:
        assert service.client().get("/healthz").status == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", service.port), timeout=5).close()
    finally:
        service.stop()


def test_missing_database_url_is_an_error() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: not set"):
        load_settings({})


@pytest.mark.parametrize("switch", ["CACHE_ENABLED", "SESSIONS_ENABLED", "RATE_LIMIT_ENABLED", "EVENTS_ENABLED"])
def test_a_redis_switch_without_redis_names_both_variables(switch: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATABASE_URL": DSN, switch: "true", "REDIS_URL": ""})
    assert f"{switch}: got 'true', allowed: false while REDIS_URL is empty" in str(caught.value)


def test_serve_exits_non_zero_with_one_message_listing_all_problems() -> None:
    result = run_sample("serve", {"DATABASE_URL": DSN, "PORT": "http", "SESSIONS_ENABLED": "true", "LOG_LEVEL": "loud"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "sample serve: invalid environment:"
    assert sorted(line.strip() for line in lines[1:]) == [
        "LOG_LEVEL: got 'loud', allowed: debug, info, warning or error",
        "PORT: got 'http', allowed: an integer from 1 to 65535",
        "SESSIONS_ENABLED: got 'true', allowed: false while REDIS_URL is empty (it needs Redis)",
    ]
