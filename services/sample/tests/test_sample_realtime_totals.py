"""GET /realtime/connections: this process's open connections and the total over every process, from the
counts each process writes to Redis; a process killed without cleaning up ages out of the total."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sample_helpers import EventStream, Postgres, Service, signup_and_login
from websockets.sync.client import connect
from ws_helpers import realtime_env, running, session_header, ws_url

from testsupport.process import wait_for
from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture
def pair(postgres: Postgres, redis_server: RedisServer) -> Iterator[tuple[Service, Service]]:
    env = realtime_env(postgres, redis_server)
    with running(env, 2) as (first, second):
        yield first, second


def test_totals_cover_both_processes_and_a_killed_one_ages_out(pair: tuple[Service, Service]) -> None:
    first, second = pair
    user, _ = signup_and_login(first)
    header = session_header(user)
    with (
        connect(ws_url(first.port), additional_headers=header),
        connect(ws_url(second.port), additional_headers=header),
    ):
        stream = EventStream(second.port)
        stream.next()

        def totals() -> dict[str, int] | None:
            reply = first.client().get("/realtime/connections")
            assert reply.header("cache-control") == "no-store"
            body: dict[str, int] = reply.json()
            return body if body == {"process": 1, "total": 3, "processes": 2} else None

        wait_for(totals, 15, "both processes' counts in the total")
        second.proc.kill()  # SIGKILL: no chance to remove its entry
        second.proc.wait()
        stream.close()
        aged = wait_for(
            lambda: (body := first.client().get("/realtime/connections").json())["processes"] == 1 and body,
            30,
            "the killed process aged out",
        )
        assert aged == {"process": 1, "total": 1, "processes": 1}
