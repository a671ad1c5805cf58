"""What a Postgres failover looks like from the service, and the 503 it becomes.

During a failover (Patroni) the primary disappears for a while: connections are refused or reset,
the server answers "the database system is shutting down" / "is starting up" (57P03) or ends open
connections (57P01, 57P02), and the old primary comes back as a read-only standby (a write there
fails with 25006; a new connection to it does not match `target_session_attrs=read-write`).
`classify` tells these apart from every other error (a bad query, a constraint, a bug), and
`DatabaseUnavailable` is the answer: 503 `database_unavailable` with `Retry-After`, saying what
happened without any DSN or password.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import asyncpg
from asyncpg.exceptions import TargetServerAttributeNotMatched
from starlette.requests import Request
from starlette.responses import Response

from sample.errors import ApiError, api_error, unexpected_error

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What `Retry-After` says on a 503 `database_unavailable`: a failover takes tens of seconds, a
client that tries again every second sees the new primary as soon as it takes writes."""

READ_ONLY = "it is read-only (a standby, e.g. the old primary after a failover)"
_TERMINATED = "it ended the connection (shutting down or restarting)"
_BY_SQLSTATE = {
    "25006": READ_ONLY,  # read_only_sql_transaction: a write on a demoted server
    "57P01": _TERMINATED,  # admin_shutdown
    "57P02": _TERMINATED,  # crash_shutdown
    "57P03": "it is starting up or shutting down",  # cannot_connect_now
    "57P05": "it ended the idle connection",  # idle_session_timeout
}
# InterfaceError is also asyncpg's "you used the API wrongly" (and DataError: a bad argument), which
# must stay a 500; these are the ones it raises for a connection that is gone. When the connection
# under a pooled one is lost, asyncpg hands it back to the pool at once, and the next call on it says
# it "has been released back to the pool": db.py holds a connection until its block ends, so there
# that message means the connection was lost.
_CLOSED_MARKERS = (
    "connection is closed",
    "connection was closed",
    "pool is closing",
    "pool is closed",
    "released back to the pool",
)


@dataclass(frozen=True)
class Failure:
    """Why the server cannot serve a request now, in words a client may read (no DSN, no password)."""

    reason: str
    read_only: bool = False
    """The server is up but does not take writes: its pooled connections must not be used again."""
    timed_out: bool = False
    """The bound was already spent waiting: not worth a second attempt within the same request."""


def classify(exc: BaseException) -> Failure | None:
    """The Failure `exc` means, or None when it is not about the server's availability."""
    if isinstance(exc, TargetServerAttributeNotMatched):
        return Failure(READ_ONLY, read_only=True)
    if isinstance(exc, asyncpg.PostgresError):
        return _server_failure(exc)
    if isinstance(exc, asyncpg.InterfaceError):
        if isinstance(exc, asyncpg.exceptions.DataError | asyncpg.exceptions.ClientConfigurationError):
            return None
        closed = any(marker in str(exc) for marker in _CLOSED_MARKERS)
        return Failure("the connection was closed") if closed else None
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError (an OSError) since 3.11
        return Failure("it did not answer in time", timed_out=True)
    if isinstance(exc, socket.gaierror):
        return Failure("its host name did not resolve")
    if isinstance(exc, ConnectionRefusedError):
        return Failure("it refused the connection")
    if isinstance(exc, ConnectionError):  # reset, aborted, broken pipe
        return Failure("the connection was reset")
    if isinstance(exc, OSError):
        return Failure(f"the network failed ({type(exc).__name__})")
    return None


def _server_failure(exc: asyncpg.PostgresError) -> Failure | None:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate in _BY_SQLSTATE:
        return Failure(_BY_SQLSTATE[sqlstate], read_only=sqlstate == "25006")
    if sqlstate.startswith("08"):  # connection_exception: gone, failed, refused, unknown outcome
        cause = exc.__cause__  # asyncpg puts the FATAL error the server sent before closing here
        if isinstance(cause, asyncpg.PostgresError) and (found := _server_failure(cause)) is not None:
            return found
        return Failure("the connection failed or was closed")
    return None


RETRY = "retry shortly"
NOTHING_WRITTEN = "nothing was written, retry shortly"
COMMIT_UNKNOWN = "it failed during COMMIT, so the write may or may not have been applied: check before repeating it"


class DatabaseUnavailable(ApiError):
    """503 `database_unavailable` + Retry-After: the request needed a server that cannot serve it now.

    `outcome` ends the message: what to do, and for a write what became of it (NOTHING_WRITTEN when it
    failed before COMMIT; COMMIT_UNKNOWN when the connection failed during COMMIT).
    """

    def __init__(self, failure: Failure, target: str = "primary", outcome: str = RETRY) -> None:
        message = f"database: the {target} is unavailable ({failure.reason}), {outcome}"
        super().__init__(503, "database_unavailable", message, {"retry-after": str(RETRY_AFTER_SECONDS)})
        self.failure = failure


async def database_error(request: Request, exc: Exception) -> Response:
    """An asyncpg error that escaped `Database`'s own handling: 503 when it is about availability, else 500."""
    failure = classify(exc)
    if failure is None:
        return await unexpected_error(request, exc)
    log.warning("database unavailable", extra={"path": request.url.path, "error": f"{type(exc).__name__}: {exc}"})
    return await api_error(request, DatabaseUnavailable(failure, "server"))


HANDLERS = {
    asyncpg.PostgresError: database_error,
    asyncpg.InterfaceError: database_error,
    TargetServerAttributeNotMatched: database_error,
}
"""Starlette exception handlers, beside errors.HANDLERS (a more specific class wins over `Exception`)."""
