"""Entry point of the CrossGuard pack: `pulumi preview --policy-pack policies` runs this.

Constructing `PolicyPack` starts the analyzer server and blocks, so tests never import this module;
they use `policies.pack` and `policies.rules` directly.
"""

from pulumi_policy import PolicyPack

from policies.pack import policies

PolicyPack(name="scaleladder", policies=policies())  # type: ignore[arg-type]
