"""Generated passwords: a Pulumi dynamic resource, created once per stack, secret in state and outputs.

The value is drawn with `secrets` when the resource is created and kept in the stack's state from
then on: `pulumi up` never changes it, changing `length` replaces it. The provider is the Python
SDK's dynamic provider, so no provider plugin has to be installed or downloaded.
"""

from __future__ import annotations

import secrets
import string
import uuid
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

ALPHABET = string.ascii_letters + string.digits
"""Alphanumeric only: the passwords are spliced into connection URLs and config files unescaped."""
LENGTH = 32


class PasswordProvider(ResourceProvider):
    """Creates a password of `length` characters; any change of `length` replaces it."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        length = int(props["length"])
        value = "".join(secrets.choice(ALPHABET) for _ in range(length))
        return CreateResult(id_=uuid.uuid4().hex, outs={"length": length, "result": value})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = int(olds.get("length", 0)) != int(news["length"])
        return DiffResult(changes=changed, replaces=["length"] if changed else [], delete_before_replace=False)


class GeneratedPassword(Resource, module="scaleladder", name="GeneratedPassword"):
    """A random alphanumeric password; `result` is secret."""

    result: pulumi.Output[str]

    def __init__(self, name: str, length: int = LENGTH, opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["result"])
        super().__init__(
            PasswordProvider(),
            name,
            {"length": length, "result": None},
            pulumi.ResourceOptions.merge(secret, opts),
        )
