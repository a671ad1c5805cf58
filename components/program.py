"""The Pulumi program proper: a built stack becomes one ComponentResource per part."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.charts import HelmRelease
from components.config import StackConfig
from components.passwords import GeneratedPassword
from components.resources import ManifestComponent, child_name
from components.stack import Secrets, build


def generated_secrets() -> Secrets:
    """Passwords created once per stack (components/passwords.py), secret in state and outputs.

    Alphanumeric: they are spliced into connection URLs by $(VAR) expansion, unescaped.
    """

    @functools.cache
    def password(purpose: str) -> pulumi.Output[str]:
        return GeneratedPassword(f"{purpose}-password").result

    return Secrets(password)


def helm_releases(releases: Sequence[HelmRelease]) -> list[pulumi.Resource]:
    """Each release after the one before it (the Gateway controller brings the CRDs others use)."""
    created: list[pulumi.Resource] = []
    for release in releases:
        repository = {"repository_opts": {"repo": release.repository}} if release.repository else {}
        created.append(
            k8s.helm.v3.Release(
                release.name,
                name=release.name,
                chart=release.chart,
                version=release.version,
                namespace=release.namespace,
                create_namespace=True,
                values=release.values,
                # wait until the release's workloads are ready: CRDs and webhooks must serve first
                atomic=True,
                timeout=600,
                opts=pulumi.ResourceOptions(depends_on=created[-1:]),
                **repository,
            )
        )
    return created


def deploy(stack_name: str, config: StackConfig) -> dict[str, Any]:
    """Create every part of the stack, each after the parts it depends on; returns the stack outputs."""
    stack = build(stack_name, config, generated_secrets())
    namespace = k8s.core.v1.Namespace(child_name(stack.namespace), metadata=stack.namespace["metadata"])
    releases = helm_releases(stack.releases)
    components: dict[str, ManifestComponent] = {}
    for part in stack.parts:
        after = [namespace, *releases, *(components[name] for name in part.depends_on)]
        components[part.name] = ManifestComponent(
            part.component, part.name, part.objects, pulumi.ResourceOptions(depends_on=after), part.moved_from
        )
    return stack.outputs
