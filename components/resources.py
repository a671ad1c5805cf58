"""The thin Pulumi layer: a stack's parts, as plain Kubernetes objects, become typed resources.

One mapping from apiVersion/kind to a `pulumi_kubernetes` class serves every part; kinds the
SDK has no class for (Gateway API, KEDA) become `CustomResource`s. Each part is one
ComponentResource whose children are named `<object name>-<kind>` with `parent=self`. Within a
part, configuration (Secrets, ConfigMaps, ServiceAccounts) is created before what reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

KINDS: dict[tuple[str, str], Any] = {
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("v1", "Pod"): k8s.core.v1.Pod,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): k8s.apiextensions.v1.CustomResourceDefinition,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
}

CONFIGURATION_KINDS = frozenset({"ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding"})

SHORT_KIND = {
    "HorizontalPodAutoscaler": "hpa",
    "PodDisruptionBudget": "pdb",
    "PersistentVolumeClaim": "pvc",
}


def child_name(obj: Mapping[str, Any]) -> str:
    """`web-deployment`, `web-hpa`: unique within a stack, readable in `pulumi stack`."""
    kind = obj["kind"]
    return f"{obj['metadata']['name']}-{SHORT_KIND.get(kind, kind.lower())}"


def keyword(key: str) -> str:
    """A top-level field as the SDK's keyword argument: `stringData` -> `string_data`."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def create(obj: Mapping[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """One typed resource from one plain object.

    Top-level fields become the SDK's keyword arguments; nested camelCase keys reach the engine
    unchanged (the SDK translates only the snake_case names it generated).
    """
    name = child_name(obj)
    body = {keyword(key): value for key, value in obj.items() if key not in ("apiVersion", "kind")}
    resource_class = KINDS.get((obj["apiVersion"], obj["kind"]))
    resource: pulumi.CustomResource
    if resource_class is None:
        resource = k8s.apiextensions.CustomResource(
            name, api_version=obj["apiVersion"], kind=obj["kind"], opts=opts, **body
        )
    else:
        resource = resource_class(name, opts=opts, **body)
    return resource


class ManifestComponent(pulumi.ComponentResource):
    """One deployable part of a stack (`scaleladder:index:<component>`) and its objects."""

    def __init__(
        self,
        component: str,
        name: str,
        objects: Sequence[Mapping[str, Any]],
        opts: pulumi.ResourceOptions | None = None,
        moved_from: Sequence[tuple[str, str]] = (),
    ) -> None:
        """`moved_from`: (component, name) of parts whose children some of `objects` were on a lower rung."""
        super().__init__(f"scaleladder:index:{component}", name, None, opts)
        configuration = [obj for obj in objects if obj["kind"] in CONFIGURATION_KINDS]
        workloads = [obj for obj in objects if obj["kind"] not in CONFIGURATION_KINDS]
        aliases = [pulumi.Alias(parent=part_urn(*previous)) for previous in moved_from]
        first = [create(obj, pulumi.ResourceOptions(parent=self, aliases=aliases)) for obj in configuration]
        after = pulumi.ResourceOptions(parent=self, depends_on=first, aliases=aliases)
        self.children = first + [create(obj, after) for obj in workloads]
        self.register_outputs({"objects": [f"{obj['kind']}/{obj['metadata']['name']}" for obj in objects]})


def part_urn(component: str, name: str) -> str:
    """The URN of a stack's part: a child of the stack, so its type chain is its own type."""
    return f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::scaleladder:index:{component}::{name}"
