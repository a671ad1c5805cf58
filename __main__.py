"""scaleladder: read the stack's config once, build its layer or phase, export its outputs."""

import pulumi
from pulumi.runtime.config import CONFIG

from components.config import from_pulumi_config
from components.program import deploy
from components.settings import ConfigError

try:
    config = from_pulumi_config(CONFIG.get())
except ConfigError as error:
    raise pulumi.RunError(f"stack {pulumi.get_stack()}: {error}") from None

for key, value in deploy(pulumi.get_stack(), config).items():
    pulumi.export(key, value)
