"""Property-based contract test: requests generated from the served OpenAPI document, valid and invalid, to
every documented operation of the real service (Postgres, Redis, NATS; sessions on), logged in. No answer is a 5xx;
every status, documented header, content type and body is one the document gives the operation; an invalid
request is a 4xx whose error names what was broken. Bounded and derandomized here; bench/contract.py runs longer."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_strategies import Call, Operation, invalid_calls, operations, valid_calls
from sample.openapi import document
from sample_helpers import PASSWORD, Client, Postgres, Reply, Service, conforms, reset, seed_products, signup_and_login
from sample_jobs_helpers import jobs_env

from testsupport.nats import NatsCluster
from testsupport.redis import RedisServer

SPEC: dict[str, Any] = json.loads(json.dumps(document()))  # what /openapi.json serves, to name the cases
LONG_RUN = os.environ.get("SAMPLE_CONTRACT_EXAMPLES")  # set by bench/contract.py: more, random examples
BOUNDED = settings(
    max_examples=int(LONG_RUN or 15),
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
CASES: Counter[str] = Counter()  # requests sent per "valid|invalid METHOD path", for bench/contract.py


@pytest.fixture(scope="module")
def service(postgres: Postgres, redis_server: RedisServer, nats_cluster: NatsCluster) -> Iterator[Service]:
    """Every feature a documented operation needs: sessions in Redis, the job queue in NATS."""
    env = {"DATABASE_URL": postgres.dsn, "REDIS_URL": redis_server.url, "SESSIONS_ENABLED": "true"}
    service = Service({**env, **jobs_env(nats_cluster)})
    yield service
    service.stop()


@pytest.fixture(scope="module")
def client(service: Service, postgres: Postgres, redis_server: RedisServer) -> Client:
    """Logged in as a user with one order; products 1 to 3 exist. The cases share this state."""
    reset(postgres, redis_server)
    seed_products(postgres, 3)
    client, _ = signup_and_login(service)
    assert client.post("/orders", {"items": [{"product_id": 1, "quantity": 1}]}).status == 201
    return client


def test_the_served_document_is_the_one_the_cases_come_from(client: Client) -> None:
    assert client.get("/openapi.json").json() == SPEC


def send(client: Client, call: Call) -> Reply:
    """The reply to `call`, logged in again first if an earlier call logged out."""
    if "sid" not in client.cookies:
        assert client.post("/sessions", {"email": "ada@example.com", "password": PASSWORD}).status == 201
    return client.request(call.method, call.url, call.body, raw=call.raw, headers=dict(call.headers))


def check(operation: Operation, call: Call, reply: Reply) -> None:
    """The reply is one the document gives `operation`: status, headers, content type and body schema."""
    shown = f"{call.method} {call.url} body={call.raw if call.raw is not None else call.body!r}"
    got = f"got {reply.status} {reply.body[:300]!r}"
    assert reply.status < 500, f"{shown}: {got}"
    responses = operation.op["responses"]
    key = next((k for k in (str(reply.status), f"{reply.status // 100}XX") if k in responses), None)
    assert key is not None, f"{shown}: {got}, documented: {', '.join(responses)}"
    for name, header in responses[key].get("headers", {}).items():
        values = reply.headers_named(name)
        assert values or not header["required"], f"{shown}: {got} without {name}, documented: required"
        assert not values or any(conforms(SPEC, header["schema"], value) for value in values), (
            f"{shown}: {got} with {name}: {values}, documented: {header['schema']}"
        )
    content = responses[key].get("content", {})
    if not content:
        assert reply.body == b"", f"{shown}: {got}, documented: no body for {key}"
        return
    media, documented = next(iter(content.items()))
    assert (reply.header("content-type") or "").startswith(media), f"{shown}: {got}, documented: {media}"
    if media == "application/json":
        assert conforms(SPEC, documented["schema"], reply.json()), f"{shown}: {got}, documented: {documented}"


@pytest.mark.parametrize("operation", operations(SPEC), ids=repr)
@BOUNDED
@given(data=st.data())
def test_valid_requests_get_documented_answers(client: Client, operation: Operation, data: st.DataObject) -> None:
    call = data.draw(valid_calls(operation))
    CASES[f"valid {operation}"] += 1
    reply = send(client, call)
    check(operation, call, reply)
    if operation.method == "GET" and reply.status == 200 and (etag := reply.header("etag")):
        head = send(client, Call("HEAD", call.url))
        assert (head.status, head.body, head.header("etag")) == (200, b"", etag), f"HEAD {call.url}: {head}"
        if "304" in operation.op["responses"]:  # nothing changed in between: the validator matches
            again = send(client, Call("GET", call.url, headers=(("if-none-match", etag),)))
            check(operation, call, again)
            assert again.status == 304, f"GET {call.url} with If-None-Match {etag}: got {again.status}"


@pytest.mark.parametrize("operation", operations(SPEC), ids=repr)
@BOUNDED
@given(data=st.data())
def test_invalid_requests_are_4xx_naming_what_is_wrong(
    client: Client, operation: Operation, data: st.DataObject
) -> None:
    call = data.draw(invalid_calls(operation))
    CASES[f"invalid {operation}"] += 1
    reply = send(client, call)
    check(operation, call, reply)
    assert 400 <= reply.status < 500, f"{call}: got {reply.status} {reply.body[:300]!r}, allowed: a 4xx"
    assert call.field is not None and call.field in reply.error, f"{call}: {reply.error!r} does not name {call.field}"
