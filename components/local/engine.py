"""Run the pulumi CLI with this project's program served by the Python SDK's own language host.

`pulumi up` normally starts the `pulumi-language-python` plugin, which runs `__main__.py` in a
new interpreter. That plugin is a separate Go module the module proxy does not serve, so the
offline toolchain (docs/local.md) has no such binary. The Python SDK carries the same service:
the language server its Automation API uses for inline programs. `scaleladder-local pulumi ARGS`
starts it in this process on a loopback port, runs `pulumi ARGS --client ADDRESS` against it, and
stops it; the program, its config and its outputs are exactly those of a plain `pulumi up`.

Commands that do not run the program (`stack`, `config`, `plugin`, ...) are passed through.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent import futures
from pathlib import Path

import grpc
from pulumi.automation._server import LanguageServer
from pulumi.runtime.proto import language_pb2_grpc

# verbs whose engine runs the program, hence accept `--client`
PROGRAM_VERBS = frozenset({"up", "update", "preview", "refresh", "destroy"})
MESSAGE_LIMIT = 400 * 1024 * 1024  # what the SDK's own servers accept: a stack's state can be large


def runs_program(args: Sequence[str]) -> bool:
    """True when `pulumi ARGS` runs the program: the first word that is not an option is a program verb."""
    verb = next((arg for arg in args if not arg.startswith("-")), None)
    return verb in PROGRAM_VERBS


def serve(program_file: Path) -> tuple[grpc.Server, str]:
    """Start the language server for `program_file` on 127.0.0.1; returns it and its address."""

    def program() -> None:
        runpy.run_path(str(program_file), run_name="__main__")

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
        ],
    )
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageServer(program), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def run(args: Sequence[str], root: Path, env: Mapping[str, str]) -> int:
    """`pulumi ARGS` from `root`, with the program served in-process when the verb runs it."""
    if not runs_program(args):
        return subprocess.run(["pulumi", *args], cwd=root, env=dict(env), check=False).returncode
    server, address = serve(root / "__main__.py")
    try:
        sys.stdout.flush()
        return subprocess.run(["pulumi", *args, "--client", address], cwd=root, env=dict(env), check=False).returncode
    finally:
        server.stop(grace=None)
