"""Stack configuration: phase defaults, overrides, and an exact message for every mistake."""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from pathlib import Path

import pytest
import yaml

from components.cli import STACKS
from components.config import StackConfig, defaults_for, from_pulumi_config, from_stack_file, from_values
from components.settings import ConfigError

# the top-level keys grow with the phases; the message's shape is what these tests pin down
TOP_LEVEL_KEYS = ", ".join(sorted(f.name for f in dataclasses.fields(StackConfig) if f.init))


def problems_of(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        from_values(values)
    return [str(problem) for problem in caught.value.problems]


def test_phase_defaults_are_cumulative() -> None:
    assert from_values({"phase": 1}).single_server is True
    phase2 = from_values({"phase": 2})
    assert (phase2.single_server, phase2.web.autoscaling.enabled, phase2.postgres.replicas) == (False, False, 0)
    phase3 = from_values({"phase": 3})
    assert phase3.web.autoscaling.enabled and phase3.postgres.replicas == 2 and phase3.postgres.pooler.enabled
    assert defaults_for(6)["web"]["autoscaling"]["enabled"] is True  # later phases keep what phase 3 switched on
    phase4 = from_values({"phase": 4})
    assert (phase4.redis.enabled, phase4.redis.mode) == (True, "cluster")
    assert phase4.web.env["CACHE_ENABLED"] == "true" and phase4.web.env["SESSIONS_ENABLED"] == "true"


def test_stack_config_overrides_phase_defaults() -> None:
    config = from_values({"phase": 3, "postgres": {"replicas": 0}, "web": {"autoscaling": {"max_replicas": 4}}})
    assert config.postgres.replicas == 0
    assert config.web.autoscaling.enabled and config.web.autoscaling.max_replicas == 4


def test_values_arrive_typed_from_pulumi_engine_strings() -> None:
    config = from_pulumi_config(
        {
            "scaleladder:phase": "3",
            "scaleladder:namespace": "ladder",
            "scaleladder:web": '{"autoscaling": {"min_replicas": 3}}',
            "kubernetes:context": "kind-scaleladder",
        }
    )
    assert (config.phase, config.namespace, config.web.autoscaling.min_replicas) == (3, "ladder", 3)


BAD_CONFIGS = [
    pytest.param(
        {"webb": {}},
        f"scaleladder:webb: unknown key; allowed keys here: {TOP_LEVEL_KEYS}",
        id="unknown-top-level-key",
    ),
    pytest.param(
        {"web": {"replica": 3}},
        "scaleladder:web.replica: unknown key; allowed keys here: autoscaling, env, image, realtime, replicas, "
        "resources, "
        "termination_grace_seconds",
        id="unknown-nested-key",
    ),
    pytest.param({"phase": "two"}, "scaleladder:phase: must be an integer, got 'two'", id="wrong-type"),
    pytest.param({"phase": True}, "scaleladder:phase: must be an integer, got true", id="bool-is-not-an-integer"),
    pytest.param({"phase": 7}, "scaleladder:phase: must be <= 6, got 7", id="unknown-phase-above"),
    pytest.param({"phase": 0}, "scaleladder:phase: must be >= 1, got 0", id="unknown-phase-below"),
    pytest.param({"phase": 2, "web": {"replicas": 0}}, "scaleladder:web.replicas: must be >= 1, got 0", id="range"),
    pytest.param(
        {"web": {"image": "scaleladder/sample:latest"}},
        "scaleladder:web.image: must be pinned to an explicit tag, got 'scaleladder/sample:latest'",
        id="latest-tag",
    ),
    pytest.param(
        {"web": {"image": "scaleladder/sample"}},
        "scaleladder:web.image: must match",
        id="untagged-image",
    ),
    pytest.param(
        {"phase": 3, "web": {"autoscaling": {"min_replicas": 5, "max_replicas": 3}}},
        "scaleladder:web.autoscaling.max_replicas: must be >= min_replicas (5), got 3",
        id="inconsistent-hpa-bounds",
    ),
    pytest.param(
        {"web": {"autoscaling": {"cpu_utilization": 150}}},
        "scaleladder:web.autoscaling.cpu_utilization: must be <= 100, got 150",
        id="percent-over-100",
    ),
    pytest.param(
        {"web": {"resources": {"memory_limit": "lots"}}},
        "scaleladder:web.resources.memory_limit: must match [0-9]+(\\.[0-9]+)?(m|Ki|Mi|Gi)?, got 'lots'",
        id="bad-quantity",
    ),
    pytest.param({"web": "big"}, "scaleladder:web: must be a mapping, got 'big'", id="scalar-for-mapping"),
    pytest.param(
        {"web": {"env": {"CACHE_ENABLED": 1}}},
        "scaleladder:web.env: must be a mapping of strings to strings, got {'CACHE_ENABLED': 1}",
        id="env-value-not-string",
    ),
    pytest.param(
        {"namespace": "Scale_Ladder"},
        "scaleladder:namespace: must match ([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?, got 'Scale_Ladder'",
        id="namespace-not-dns-label",
    ),
    pytest.param(
        {"phase": 1, "web": {"autoscaling": {"enabled": True}}},
        "scaleladder:web.autoscaling.enabled: must be false when single_server is true (one pod cannot autoscale)",
        id="single-server-cannot-autoscale",
    ),
    pytest.param(
        {"phase": 1, "postgres": {"replicas": 2}},
        "scaleladder:postgres.replicas: must be 0 when single_server is true, got 2",
        id="single-server-has-no-replicas",
    ),
    pytest.param(
        {"phase": 2, "web": {"env": {"SESSIONS_ENABLED": "true"}}},
        "scaleladder:web.env.SESSIONS_ENABLED: needs redis.enabled: true (the service keeps that state in Redis)",
        id="switch-without-its-store",
    ),
    pytest.param(
        {"phase": 4, "redis": {"masters": 2}},
        "scaleladder:redis.masters: must be >= 3 for cluster mode, got 2",
        id="cluster-needs-three-masters",
    ),
    pytest.param(
        {"redis": {"mode": "sentinel"}},
        "scaleladder:redis.mode: must be one of 'standalone', 'cluster', got 'sentinel'",
        id="unknown-choice",
    ),
    pytest.param(
        {"phase": 5, "routing": {"kind": "none"}},
        "scaleladder:edge_cache.enabled: needs a front door (routing.kind gateway or ingress) to send reads through it",
        id="edge-cache-without-a-route",
    ),
    pytest.param(
        {"phase": 3, "postgres": {"ha": {"ttl": 20, "loop_wait": 10, "retry_timeout": 10}}},
        "scaleladder:postgres.ha.ttl: must be at least loop_wait + 2 x retry_timeout = 30 (a leader must be able to "
        "retry the API server before its lock expires), got 20",
        id="leader-lock-shorter-than-its-retries",
    ),
    pytest.param(
        {"phase": 3, "postgres": {"ha": {"image": "scaleladder/postgres-patroni:latest"}}},
        "scaleladder:postgres.ha.image: must be pinned to an explicit tag, got 'scaleladder/postgres-patroni:latest'",
        id="patroni-image-latest",
    ),
    pytest.param(
        {"phase": 3, "postgres": {"ha": {"ttl": 19}}},
        "scaleladder:postgres.ha.ttl: must be >= 20, got 19",
        id="leader-lock-below-patronis-minimum",
    ),
    pytest.param(
        {"web": {"termination_grace_seconds": 1.5}},
        "scaleladder:web.termination_grace_seconds: must be an integer, got 1.5",
        id="float-for-integer",
    ),
]


@pytest.mark.parametrize(("values", "expected"), BAD_CONFIGS)
def test_each_mistake_is_named_with_its_key_value_and_rule(values: dict, expected: str) -> None:
    problems = problems_of(values)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"phase": 9, "web": {"replicas": -1, "imag": "x"}, "extra": 1})
    assert problems == [
        f"scaleladder:extra: unknown key; allowed keys here: {TOP_LEVEL_KEYS}",
        "scaleladder:phase: must be <= 6, got 9",
        "scaleladder:web.imag: unknown key; allowed keys here: autoscaling, env, image, realtime, replicas, "
        "resources, "
        "termination_grace_seconds",
        "scaleladder:web.replicas: must be >= 1, got -1",
    ]


def write_stack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_stack_file_ignores_other_providers_settings(tmp_path: Path) -> None:
    path = write_stack(
        tmp_path,
        """
        config:
          kubernetes:context: kind-scaleladder
          scaleladder:phase: 2
          scaleladder:web:
            replicas: 3
        """,
    )
    config = from_stack_file(path)
    assert isinstance(config, StackConfig) and config.web.replicas == 3


def test_stack_file_pulumi_rewrote_reads_as_the_program_does(tmp_path: Path) -> None:
    """`pulumi stack select --create` and `pulumi config set` write plain values back as strings."""
    path = write_stack(
        tmp_path,
        """
        config:
          scaleladder:phase: "3"
          scaleladder:namespace: "team-a"
          scaleladder:web:
            image: scaleladder/sample:0123456789ab
        encryptionsalt: v1:abc
        """,
    )
    config = from_stack_file(path)
    assert config.phase == 3
    assert config.namespace == "team-a"
    assert config == from_pulumi_config(
        {
            "scaleladder:phase": "3",
            "scaleladder:namespace": "team-a",
            "scaleladder:web": '{"image": "scaleladder/sample:0123456789ab"}',
        }
    )


def test_stack_file_with_encrypted_value_is_refused(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "config:\n  scaleladder:namespace:\n    secure: AAABAKx\n")
    with pytest.raises(ConfigError) as caught:
        from_stack_file(path)
    assert [str(p) for p in caught.value.problems] == [
        "scaleladder:namespace: is encrypted; no scaleladder setting is a secret, set it in plain text"
    ]


def test_stack_file_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "config: [unclosed\n")
    with pytest.raises(ConfigError, match=r"Pulumi.test.yaml is not valid YAML"):
        from_stack_file(path)


def test_every_phase_stack_lets_the_provider_update_configmaps_in_place() -> None:
    """The provider's default replaces a changed ConfigMap (deleting it first under its fixed name,
    under the pods that mount it); the kit rolls those pods by checksum annotations instead."""
    for path in sorted(STACKS.glob("Pulumi.phase*.yaml")):
        config = yaml.safe_load(path.read_text())["config"]
        assert config.get("kubernetes:enableConfigMapMutable") is True, path.name


def numeric_settings(spec: type, prefix: str = "") -> list[tuple[str, type, float | None]]:
    """(key, int or float, maximum) of every numeric setting of `spec`, nested specs flattened."""
    hints = typing.get_type_hints(spec)
    found: list[tuple[str, type, float | None]] = []
    for spec_field in dataclasses.fields(spec):
        annotation = hints[spec_field.name]
        if dataclasses.is_dataclass(annotation):
            found += numeric_settings(annotation, f"{prefix}{spec_field.name}.")
        elif annotation in (int, float):
            found.append((f"{prefix}{spec_field.name}", annotation, spec_field.metadata["maximum"]))
    return found


NUMERIC_SETTINGS = numeric_settings(StackConfig)


def test_every_numeric_setting_has_an_upper_bound() -> None:
    assert len(NUMERIC_SETTINGS) > 70
    assert [key for key, _, maximum in NUMERIC_SETTINGS if maximum is None] == []


@pytest.mark.parametrize(("key", "kind", "maximum"), NUMERIC_SETTINGS, ids=[key for key, *_ in NUMERIC_SETTINGS])
def test_a_value_past_a_settings_bound_is_named_with_the_bound(key: str, kind: type, maximum: float) -> None:
    values: dict = {"phase": 6}
    *parents, leaf = key.split(".")
    level = values
    for parent in parents:
        level = level.setdefault(parent, {})
    level[leaf] = maximum + 1
    assert f"scaleladder:{key}: must be <= {maximum!r}, got {kind(maximum + 1)!r}" in problems_of(values)
