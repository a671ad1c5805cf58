"""Ask a Pulumi provider plugin for its version, the way the engine does (gRPC GetPluginInfo).

A provider has no --version flag: started with no arguments it serves gRPC on a loopback port
and prints that port; the engine then calls GetPluginInfo and warns when the version differs
from the one the SDK asked for.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc

START_TIMEOUT = 60.0


def plugin_version(path: Path) -> str:
    """The version the plugin at `path` reports, or why it could not be asked."""
    try:
        process = subprocess.Popen(
            [str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
    except OSError as error:
        return f"could not start: {error}"
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            return f"printed no port (got {port!r})"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
            info = provider_pb2_grpc.ResourceProviderStub(channel).GetPluginInfo(
                empty_pb2.Empty(), timeout=START_TIMEOUT
            )
        return str(info.version)
    except grpc.RpcError as error:
        return f"GetPluginInfo failed: {error}"
    except grpc.FutureTimeoutError:
        return f"no gRPC answer on port {port}"
    finally:
        process.kill()
        process.wait()
