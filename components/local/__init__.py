"""The local flow: a kind cluster, the sample image, and `pulumi up` per stack, planned as commands.

`prerequisites` finds the tools, `cluster_config` reads and checks the kind cluster file, `image`
names the sample image by content, `workspace` keeps Pulumi's per-machine files out of the repo,
`plan` turns options into the list of commands, `runner` executes them with progress, and `cli`
is `scaleladder-local up|down|plan|check`.
"""
