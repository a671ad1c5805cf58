"""Settings from environment variables only, validated all at once.

`load_settings()` reads every variable, collects every problem and raises one `ConfigError` whose
message lists each bad variable with the value received and what is allowed (URLs with their
passwords masked). Passwords can come from files instead (`*_PASSWORD_FILE`, see `secretfiles`):
DATABASE_PASSWORD_FILE goes into DATABASE_URL and every DATABASE_REPLICA_URLS DSN, REDIS_PASSWORD_FILE
into REDIS_URL.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sample.secretfiles import PasswordFile, mask

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


class ConfigError(Exception):
    """One or more environment variables are invalid; the message lists all of them."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]

    @classmethod
    def listing(cls, problems: Sequence[str]) -> ConfigError:
        """The error for `problems`, one line each under "invalid environment:"."""
        return cls("invalid environment:\n  " + "\n  ".join(problems), problems)


@dataclass(frozen=True)
class Settings:
    listen_address: str = "0.0.0.0"
    """LISTEN_ADDRESS: IP address to listen on; 0.0.0.0 (every IPv4 interface) suits containers."""
    port: int = 8080
    """PORT: TCP port to listen on, on LISTEN_ADDRESS."""
    web_concurrency: int = 1
    """WEB_CONCURRENCY: worker processes sharing the port."""
    database_url: str = ""
    """DATABASE_URL: primary DSN; every write and read-your-writes read goes here. With DATABASE_PASSWORD_FILE
    the file's password is in it (and in every replica DSN)."""
    database_replica_urls: tuple[str, ...] = ()
    """DATABASE_REPLICA_URLS: replica DSNs for other reads; empty sends every read to the primary."""
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_statement_timeout_ms: int = 5000
    """DB_STATEMENT_TIMEOUT_MS: Postgres statement_timeout on every pooled connection."""
    redis_url: str = ""
    """REDIS_URL: empty means no Redis, so cache, sessions, rate limiting and events must be off. With
    REDIS_PASSWORD_FILE the file's password is in it."""
    redis_mode: str = "standalone"
    cache_enabled: bool = False
    cache_ttl_seconds: int = 60
    """CACHE_TTL_SECONDS: how long a cached product is fresh (±10% per entry, so keys do not expire together)."""
    cache_refresh_ahead_percent: int = 25
    """CACHE_REFRESH_AHEAD_PERCENT: a read in the last this-many percent of an entry's TTL reloads it in the
    background (one process, batched), so keys that are being read never expire; 0 turns refresh-ahead off."""
    cache_stale_seconds: int = 0
    """CACHE_STALE_SECONDS: an expired entry is still served this long while it is reloaded in the background
    (stale-while-revalidate); a change made outside the service can then show up to TTL + this late."""
    sessions_enabled: bool = False
    session_ttl_seconds: int = 1800
    cookie_secure: bool = True
    rate_limit_enabled: bool = False
    rate_limit_algorithm: str = "token_bucket"
    rate_limit_window_seconds: int = 60
    rate_limit_ip_limit: int = 600
    rate_limit_user_limit: int = 1200
    rate_limit_burst: int = 100
    events_enabled: bool = False
    events_heartbeat_seconds: int = 15
    events_history: int = 10000
    ws_compression: bool = True
    """WS_COMPRESSION: permessage-deflate for a WebSocket client that offers it; off saves about 35 KiB a connection
    (the zlib contexts) and a compression per subscriber per event, and sends frames uncompressed."""
    realtime_max_connections: int = 10000
    """REALTIME_MAX_CONNECTIONS: open /ws and /events connections this process takes; at the cap a new one gets
    503 at_capacity (Retry-After: 1) and /readyz answers 503, so the pod stops taking new ones."""
    drain_batch_percent: int = 10
    """DRAIN_BATCH_PERCENT: on SIGTERM, the share of the connections open at the start that is closed per batch
    (WebSocket close 1012 "reconnect elsewhere", SSE streams ended), so at most this share reconnects at once."""
    drain_batch_interval_ms: int = 1000
    """DRAIN_BATCH_INTERVAL_MS: the pause between drain batches; the batches take at most
    ceil(100 / DRAIN_BATCH_PERCENT) of these, then uvicorn's own shutdown starts."""
    http_cache_max_age_seconds: int = 30
    read_your_writes_seconds: int = 5
    max_body_bytes: int = 65536
    ready_timeout_ms: int = 1000
    shutdown_timeout_seconds: int = 20
    log_level: str = "info"
    access_log: bool = False
    role: str = "all"
    """ROLE: which paths this process serves (sample.roles.PATHS); `worker` serves none and consumes jobs."""
    catalog_url: str = ""
    """CATALOG_URL: the catalog's base URL (the Envoy sidecar's local port); empty: products read in-process."""
    orders_url: str = ""
    """ORDERS_URL: the orders service's base URL; empty: a user's orders read in-process."""
    upstream_timeout_ms: int = 5000
    """UPSTREAM_TIMEOUT_MS: whole-call timeout of a call to CATALOG_URL or ORDERS_URL."""
    nats_url: str = ""
    """NATS_URL: comma-separated NATS servers; empty: no job queue (POST /jobs answers 404)."""
    jobs_stream: str = "JOBS"
    jobs_subject_prefix: str = "jobs"
    jobs_consumer: str = "workers"
    jobs_max_deliver: int = 5
    jobs_results_bucket: str = "JOB_RESULTS"
    jobs_retry_delay_ms: int = 1000
    """JOBS_RETRY_DELAY_MS: a failed job is delivered again after this delay (until JOBS_MAX_DELIVER)."""


@dataclass(frozen=True)
class Variable:
    """One environment variable: its Settings field, how to parse it and what is allowed."""

    name: str
    field: str
    parse: Callable[[str], Any]
    allowed: str
    urls: bool = False
    """The value holds URLs: an error shows it with their passwords masked."""


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if not low <= value <= high:
            raise ValueError
        return value

    return parse


def _bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.strip() not in choices:
            raise ValueError
        return raw.strip()

    return parse


def _ip(raw: str) -> str:
    return str(ipaddress.ip_address(raw.strip()))  # ValueError for anything but one IPv4 or IPv6 address


def _dsn(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError
    return value


def _dsn_list(raw: str) -> tuple[str, ...]:
    return tuple(_dsn(part) for part in raw.split(",") if part.strip())


def _http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not re.fullmatch(r"https?://[^/\s]+", value):
        raise ValueError
    return value


def _nats_urls(raw: str) -> str:
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not all(re.fullmatch(r"(nats|tls)://[^/\s,]+", part) for part in parts):
        raise ValueError
    return ",".join(parts)


def _name(pattern: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not re.fullmatch(pattern, raw.strip()):
            raise ValueError
        return raw.strip()

    return parse


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("redis://", "rediss://")):
        raise ValueError
    return value


HOUR, DAY = 3600, 86400
ROLES = ("all", "auth", "catalog", "orders", "worker")
NATS_URLS = "nats://host:port, comma-separated for several servers"
JS_NAME = r"[A-Za-z0-9_-]{1,64}"
BOOL = "true or false (also 1/0, yes/no, on/off)"
VARIABLES = (
    Variable("LISTEN_ADDRESS", "listen_address", _ip, "an IPv4 or IPv6 address, e.g. 0.0.0.0, 127.0.0.1 or ::"),
    Variable("PORT", "port", _int_in(1, 65535), "an integer from 1 to 65535"),
    Variable("WEB_CONCURRENCY", "web_concurrency", _int_in(1, 64), "an integer from 1 to 64"),
    Variable("DATABASE_URL", "database_url", _dsn, "a DSN postgresql://user:pass@host:port/db (required)", urls=True),
    Variable(
        "DATABASE_REPLICA_URLS", "database_replica_urls", _dsn_list, "comma-separated postgresql:// DSNs", urls=True
    ),
    Variable("DB_POOL_MIN", "db_pool_min", _int_in(0, 1000), "an integer from 0 to 1000"),
    Variable("DB_POOL_MAX", "db_pool_max", _int_in(1, 1000), "an integer from 1 to 1000"),
    Variable("DB_STATEMENT_TIMEOUT_MS", "db_statement_timeout_ms", _int_in(1, HOUR * 1000), "1 to 3600000 ms"),
    Variable(
        "REDIS_URL", "redis_url", _redis_url, "empty, or redis://[user:pass@]host:port[/db] or rediss://", urls=True
    ),
    Variable("REDIS_MODE", "redis_mode", _choice("standalone", "cluster"), "standalone or cluster"),
    Variable("CACHE_ENABLED", "cache_enabled", _bool, BOOL),
    Variable("CACHE_TTL_SECONDS", "cache_ttl_seconds", _int_in(1, DAY), "1 to 86400 seconds"),
    Variable("CACHE_REFRESH_AHEAD_PERCENT", "cache_refresh_ahead_percent", _int_in(0, 90), "an integer from 0 to 90"),
    Variable("CACHE_STALE_SECONDS", "cache_stale_seconds", _int_in(0, DAY), "0 to 86400 seconds"),
    Variable("SESSIONS_ENABLED", "sessions_enabled", _bool, BOOL),
    Variable("SESSION_TTL_SECONDS", "session_ttl_seconds", _int_in(60, 30 * DAY), "60 to 2592000 seconds"),
    Variable("COOKIE_SECURE", "cookie_secure", _bool, BOOL),
    Variable("RATE_LIMIT_ENABLED", "rate_limit_enabled", _bool, BOOL),
    Variable(
        "RATE_LIMIT_ALGORITHM",
        "rate_limit_algorithm",
        _choice("token_bucket", "sliding_window"),
        "token_bucket or sliding_window",
    ),
    Variable("RATE_LIMIT_WINDOW_SECONDS", "rate_limit_window_seconds", _int_in(1, DAY), "1 to 86400 seconds"),
    Variable("RATE_LIMIT_IP_LIMIT", "rate_limit_ip_limit", _int_in(1, 10**9), "an integer from 1 to 10^9"),
    Variable("RATE_LIMIT_USER_LIMIT", "rate_limit_user_limit", _int_in(1, 10**9), "an integer from 1 to 10^9"),
    Variable("RATE_LIMIT_BURST", "rate_limit_burst", _int_in(1, 10**9), "an integer from 1 to 10^9"),
    Variable("EVENTS_ENABLED", "events_enabled", _bool, BOOL),
    Variable("EVENTS_HEARTBEAT_SECONDS", "events_heartbeat_seconds", _int_in(1, HOUR), "1 to 3600 seconds"),
    Variable("EVENTS_HISTORY", "events_history", _int_in(1, 10**7), "an integer from 1 to 10000000"),
    Variable("REALTIME_MAX_CONNECTIONS", "realtime_max_connections", _int_in(1, 10**6), "an integer from 1 to 1000000"),
    Variable("DRAIN_BATCH_PERCENT", "drain_batch_percent", _int_in(1, 100), "an integer from 1 to 100"),
    Variable("DRAIN_BATCH_INTERVAL_MS", "drain_batch_interval_ms", _int_in(0, 60000), "0 to 60000 ms"),
    Variable("WS_COMPRESSION", "ws_compression", _bool, BOOL),
    Variable("HTTP_CACHE_MAX_AGE_SECONDS", "http_cache_max_age_seconds", _int_in(0, DAY), "0 to 86400 seconds"),
    Variable("READ_YOUR_WRITES_SECONDS", "read_your_writes_seconds", _int_in(0, HOUR), "0 to 3600 seconds"),
    Variable("MAX_BODY_BYTES", "max_body_bytes", _int_in(1024, 64 * 1024 * 1024), "1024 to 67108864 bytes"),
    Variable("READY_TIMEOUT_MS", "ready_timeout_ms", _int_in(10, 60000), "10 to 60000 ms"),
    Variable("SHUTDOWN_TIMEOUT_SECONDS", "shutdown_timeout_seconds", _int_in(1, HOUR), "1 to 3600 seconds"),
    Variable("LOG_LEVEL", "log_level", _choice("debug", "info", "warning", "error"), "debug, info, warning or error"),
    Variable("ACCESS_LOG", "access_log", _bool, BOOL),
    Variable("ROLE", "role", _choice(*ROLES), ", ".join(ROLES)),
    Variable("CATALOG_URL", "catalog_url", _http_url, "empty, or http://host:port (no path)"),
    Variable("ORDERS_URL", "orders_url", _http_url, "empty, or http://host:port (no path)"),
    Variable("UPSTREAM_TIMEOUT_MS", "upstream_timeout_ms", _int_in(10, 60000), "10 to 60000 ms"),
    Variable("NATS_URL", "nats_url", _nats_urls, NATS_URLS),
    Variable("JOBS_STREAM", "jobs_stream", _name(JS_NAME), "1 to 64 of A-Z a-z 0-9 _ -"),
    Variable("JOBS_SUBJECT_PREFIX", "jobs_subject_prefix", _name(r"[a-z][a-z0-9_-]*"), "a-z, then a-z 0-9 _ -"),
    Variable("JOBS_CONSUMER", "jobs_consumer", _name(JS_NAME), "1 to 64 of A-Z a-z 0-9 _ -"),
    Variable("JOBS_MAX_DELIVER", "jobs_max_deliver", _int_in(1, 100), "an integer from 1 to 100"),
    Variable("JOBS_RESULTS_BUCKET", "jobs_results_bucket", _name(JS_NAME), "1 to 64 of A-Z a-z 0-9 _ -"),
    Variable("JOBS_RETRY_DELAY_MS", "jobs_retry_delay_ms", _int_in(0, HOUR * 1000), "0 to 3600000 ms"),
)
# what each role cannot run without: ROLE=worker without NATS_URL is a startup error naming NATS_URL
ROLE_NEEDS = {
    "auth": (("ORDERS_URL", "orders_url", "http://host:port"),),
    "orders": (("CATALOG_URL", "catalog_url", "http://host:port"), ("NATS_URL", "nats_url", NATS_URLS)),
    "worker": (("NATS_URL", "nats_url", NATS_URLS),),
}

REDIS_SWITCHES = (
    ("CACHE_ENABLED", "cache_enabled"),
    ("SESSIONS_ENABLED", "sessions_enabled"),
    ("RATE_LIMIT_ENABLED", "rate_limit_enabled"),
    ("EVENTS_ENABLED", "events_enabled"),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `environ` (default os.environ); unset variables keep the defaults above."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in VARIABLES:
        if var.name not in env:
            continue
        raw = env[var.name]
        try:
            values[var.field] = var.parse(raw)
        except ValueError:
            problems.append(f"{var.name}: got {mask(raw) if var.urls else raw!r}, allowed: {var.allowed}")
    _insert_passwords(values, env, problems)
    settings = Settings(**values)
    problems += _cross_checks(settings, env)
    if problems:
        raise ConfigError.listing(problems)
    return settings


def _insert_passwords(values: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    """The passwords of DATABASE_PASSWORD_FILE and REDIS_PASSWORD_FILE into the URLs parsed so far."""
    database = PasswordFile(env, "DATABASE_PASSWORD_FILE", problems)
    if "database_url" in values:
        values["database_url"] = database.insert("DATABASE_URL", values["database_url"], problems)
    if "database_replica_urls" in values:
        values["database_replica_urls"] = tuple(
            database.insert("DATABASE_REPLICA_URLS", url, problems) for url in values["database_replica_urls"]
        )
    redis = PasswordFile(env, "REDIS_PASSWORD_FILE", problems)
    if "redis_url" in values:
        values["redis_url"] = redis.insert("REDIS_URL", values["redis_url"], problems)
    if redis.path and not env.get("REDIS_URL", "").strip():
        problems.append(f"REDIS_PASSWORD_FILE: got {redis.path!r}, allowed: unset while REDIS_URL is empty")


def _cross_checks(settings: Settings, env: Mapping[str, str]) -> list[str]:
    problems = []
    if not settings.database_url and "DATABASE_URL" not in env:
        problems.append("DATABASE_URL: not set, allowed: a DSN postgresql://user:pass@host:port/db (required)")
    if settings.db_pool_min > settings.db_pool_max:
        problems.append(
            f"DB_POOL_MIN: got {settings.db_pool_min}, allowed: at most DB_POOL_MAX ({settings.db_pool_max})"
        )
    if not settings.redis_url:
        for name, field in REDIS_SWITCHES:
            if getattr(settings, field):
                problems.append(f"{name}: got {env[name]!r}, allowed: false while REDIS_URL is empty (it needs Redis)")
    for name, field, allowed in ROLE_NEEDS.get(settings.role, ()):
        if not getattr(settings, field):
            problems.append(f"{name}: not set, allowed: {allowed} (required with ROLE={settings.role})")
    return problems
