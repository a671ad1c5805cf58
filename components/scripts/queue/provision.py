"""Apply JetStream stream and consumer definitions idempotently: create what is missing, update what differs.

Usage: NATS_URL=nats://host:4222[,nats://...] python provision.py jetstream.json

`jetstream.json` holds the JetStream API request bodies the kit renders (`components/queue.py`,
`jetstream_definitions`): `{"streams": [<stream config>], "consumers": [<consumer create request>]}`.
Waits (up to PROVISION_TIMEOUT_SECONDS, default 300) for the cluster to accept JetStream requests,
since the Job may start before a majority of members is up. Prints one line per object; exits
non-zero, naming the object and the server's error, when a definition cannot be applied.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import nats
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as RequestTimeout

API = "$JS.API"
STREAM_NOT_FOUND = 10059
RETRYABLE = {10008}  # JetStream not ready yet (no meta leader, or no quorum for a new stream)


class ProvisionError(RuntimeError):
    """A definition the cluster refused; the message names it and carries the server's error."""


async def request(nc: Any, subject: str, body: dict[str, Any] | None, deadline: float) -> dict[str, Any]:
    """A JetStream API call, retried while the cluster is still forming; returns the reply (maybe an error)."""
    payload = json.dumps(body).encode() if body is not None else b""
    while True:
        try:
            reply = json.loads((await nc.request(subject, payload, timeout=5)).data)
            code = reply.get("error", {}).get("err_code")
            if code not in RETRYABLE:
                return dict(reply)
        except (NoRespondersError, RequestTimeout):
            reply = {"error": {"description": "no JetStream responders yet"}}
        if time.monotonic() > deadline:
            raise ProvisionError(f"{subject}: cluster not ready in time: {reply['error']}")
        await asyncio.sleep(1)


def differs(wanted: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return sorted(key for key, value in wanted.items() if actual.get(key) != value)


async def apply_stream(nc: Any, config: dict[str, Any], deadline: float) -> str:
    name = config["name"]
    info = await request(nc, f"{API}.STREAM.INFO.{name}", None, deadline)
    if info.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
        action, verb = "CREATE", "created"
    elif "error" in info:
        raise ProvisionError(f"stream {name}: {info['error']}")
    elif changed := differs(config, info["config"]):
        action, verb = "UPDATE", f"updated ({', '.join(changed)})"
    else:
        return f"stream {name}: unchanged"
    reply = await request(nc, f"{API}.STREAM.{action}.{name}", config, deadline)
    if "error" in reply:
        raise ProvisionError(f"stream {name}: {action.lower()} refused: {reply['error']}")
    return f"stream {name}: {verb}"


async def apply_consumer(nc: Any, definition: dict[str, Any], deadline: float) -> str:
    stream, config = definition["stream_name"], definition["config"]
    durable = config["durable_name"]
    label = f"consumer {stream}/{durable}"
    info = await request(nc, f"{API}.CONSUMER.INFO.{stream}.{durable}", None, deadline)
    if "error" not in info and not (changed := differs(config, info["config"])):
        return f"{label}: unchanged"
    verb = "created" if "error" in info else f"updated ({', '.join(changed)})"
    # action "" is create-or-update: fields that cannot change make the server refuse, which we report
    reply = await request(nc, f"{API}.CONSUMER.CREATE.{stream}.{durable}", {**definition, "action": ""}, deadline)
    if "error" in reply:
        raise ProvisionError(f"{label}: refused: {reply['error']}")
    return f"{label}: {verb}"


async def report(error: Exception) -> None:
    """One line per connection problem instead of the client's traceback."""
    print(f"nats: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


async def connect(servers: list[str], deadline: float) -> Any:
    """A connection to any member, retried until the deadline: the Job may start before the servers."""
    while True:
        try:
            return await nats.connect(
                servers=servers, connect_timeout=2, max_reconnect_attempts=5, reconnect_time_wait=1, error_cb=report
            )
        except (NoServersError, OSError) as error:
            if time.monotonic() > deadline:
                raise ProvisionError(f"no NATS server reachable at {servers}: {error}") from error
            await asyncio.sleep(1)


async def provision(servers: list[str], definitions: dict[str, Any], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    nc = await connect(servers, deadline)
    try:
        lines = [await apply_stream(nc, stream, deadline) for stream in definitions["streams"]]
        lines += [await apply_consumer(nc, consumer, deadline) for consumer in definitions["consumers"]]
        return lines
    finally:
        await nc.close()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as file:
        definitions = json.load(file)
    servers = os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(",")
    timeout = float(os.environ.get("PROVISION_TIMEOUT_SECONDS", "300"))
    try:
        for line in asyncio.run(provision(servers, definitions, timeout)):
            print(line, flush=True)
    except ProvisionError as error:
        print(f"provisioning failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
