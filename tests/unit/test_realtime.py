"""Long-lived connections: the per-pod cap and drain batches as the app's environment, and the grace they need."""

from __future__ import annotations

import pytest

from components.config import from_values
from components.settings import ConfigError
from components.web import Tier, WebSpec, web_container

WEB = Tier()


def problems(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        from_values(values)
    return [str(problem) for problem in caught.value.problems]


def realtime_env(spec: WebSpec, tier: Tier = WEB) -> dict[str, str]:
    names = ("REALTIME_MAX_CONNECTIONS", "DRAIN_BATCH_PERCENT", "DRAIN_BATCH_INTERVAL_MS", "WS_COMPRESSION")
    return {e["name"]: e["value"] for e in web_container(spec, [], tier)["env"] if e["name"] in names}


def test_defaults_become_the_apps_environment() -> None:
    assert realtime_env(WebSpec()) == {
        "REALTIME_MAX_CONNECTIONS": "1000",
        "DRAIN_BATCH_PERCENT": "10",
        "DRAIN_BATCH_INTERVAL_MS": "1000",
        "WS_COMPRESSION": "true",
    }


def test_compression_can_be_switched_off() -> None:
    spec = from_values({"web": {"realtime": {"compression": False}}}).web
    assert realtime_env(spec)["WS_COMPRESSION"] == "false"


def test_the_pods_cap_is_split_over_its_processes() -> None:
    spec = from_values({"web": {"env": {"WEB_CONCURRENCY": "4"}, "realtime": {"max_connections": 1001}}}).web
    assert realtime_env(spec)["REALTIME_MAX_CONNECTIONS"] == "250"


def test_a_tier_without_a_service_gets_no_connection_settings() -> None:
    assert realtime_env(WebSpec(), Tier(name="worker", command="worker", service=False)) == {}


def test_default_grace_covers_pre_stop_drain_and_shutdown() -> None:
    for phase in range(1, 7):
        assert from_values({"phase": phase}).web.termination_grace_seconds == 45


def test_grace_shorter_than_the_stop_is_refused_with_the_sum() -> None:
    assert problems({"web": {"termination_grace_seconds": 30}}) == [
        "scaleladder:web.termination_grace_seconds: must cover the preStop sleep (5 s) + the drain batches (10 s) "
        "+ the app's shutdown timeout (20 s) = 35 s, got 30"
    ]


def test_grace_follows_the_drain_batches_and_the_apps_own_shutdown_timeout() -> None:
    # ceil(100 / 30) = 4 batches, 2.5 s apart
    web = {
        "env": {"SHUTDOWN_TIMEOUT_SECONDS": "30"},
        "realtime": {"drain_batch_percent": 30, "drain_batch_interval_ms": 2500},
    }
    assert from_values({"web": {**web, "termination_grace_seconds": 45}}).web.termination_grace_seconds == 45
    assert problems({"web": {**web, "termination_grace_seconds": 44}}) == [
        "scaleladder:web.termination_grace_seconds: must cover the preStop sleep (5 s) + the drain batches (10 s) "
        "+ the app's shutdown timeout (30 s) = 45 s, got 44"
    ]


def test_target_above_the_cap_is_refused() -> None:
    assert problems({"web": {"realtime": {"max_connections": 500}}}) == [
        "scaleladder:web.realtime.target_connections: must be <= max_connections (500), got 800"
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"realtime": {"drain_batch_percent": 0}}, "scaleladder:web.realtime.drain_batch_percent: must be >= 1, got 0"),
        (
            {"realtime": {"drain_batch_interval_ms": 60001}},
            "scaleladder:web.realtime.drain_batch_interval_ms: must be <= 60000, got 60001",
        ),
        (
            {"realtime": {"max_connections": 0}},
            "scaleladder:web.realtime.max_connections: must be >= 1, got 0",
        ),
        (
            {"env": {"WEB_CONCURRENCY": "many"}},
            "scaleladder:web.env.WEB_CONCURRENCY: must be an integer from 1 to 64, got 'many'",
        ),
        (
            {"env": {"SHUTDOWN_TIMEOUT_SECONDS": "0"}},
            "scaleladder:web.env.SHUTDOWN_TIMEOUT_SECONDS: must be an integer from 1 to 3600, got '0'",
        ),
    ],
)
def test_bad_values_are_named(values: dict, expected: str) -> None:
    assert problems({"web": values}) == [expected]
