"""The edge cache's VCL, generated from a typed cache policy.

`render_vcl(policy)` is the whole `default.vcl` the Varnish pods load, and the file the
integration tests run under a real varnishd. What it does, in request order:

- `/varnish-health` answers 200 from Varnish itself (kubelet probes; no origin round trip).
- Long-lived streams are piped: a WebSocket upgrade (any path) and any request to a stream path
  (`realtime.STREAM_PATHS`: `/ws`, `/events`) hand the client's connection to the origin, with
  the Upgrade and Connection headers (Varnish drops hop-by-hop headers otherwise). Never cached,
  and free of the origin's first-byte and between-bytes timeouts (the routes send these paths
  past the cache anyway; this is for setups where the cache fronts everything).
- PURGE and BAN are served only on the invalidation listener (`-a purge=...`, never routed from
  outside) and only to callers in the ACL (pod and service CIDRs, loopback); elsewhere 405 / 403.
  PURGE drops one normalised URL; BAN takes `X-Ban-Tag: <surrogate key>` or `X-Ban-Prefix: /path`
  and bans on headers stored on the object (`obj.*` only, so the ban lurker can retire bans).
- The cache key is normalised: host lowercased without port, fragment dropped, tracking
  parameters removed, query string sorted.
- Each request matches the longest path-prefix rule: `static` drops cookies both ways, `api`
  bypasses the cache for Authorization and session cookies (other cookies are dropped),
  `pass` never caches. Paths no rule matches are passed.
- TTL: Surrogate-Control `max-age` wins, then Cache-Control `s-maxage`/`max-age`/Expires
  (Varnish's own parsing), then the rule's default. A stale object is served for the rule's
  `grace_seconds` while it is refreshed in the background (stale-while-revalidate); while the
  origin's health probe fails, or when a fetch fails (5xx, no connection), for up to
  `stale_if_error_seconds` (or the origin's own `stale-if-error`). An error is never stored
  over a stale copy.
- Responses carry `X-Cache` (HIT, HIT-STALE, MISS, PASS) and `X-Cache-Hits` next to `Age`;
  Surrogate-Key, Surrogate-Control and the internal headers never leave the cache.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from components.realtime import STREAM_PATHS
from components.settings import setting
from components.web import NAME as WEB_SERVICE
from components.web import SERVICE_PORT as WEB_PORT

PREFIX = r"/[A-Za-z0-9._~/-]*"
PARAMETER = r"[A-Za-z0-9_.-]+\*?"
COOKIE = r"[A-Za-z0-9_.-]+"
HOST = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
HEALTH_PATH = "/varnish-health"
PURGE_SOCKET = "purge"
TAG = "[A-Za-z0-9_.:-]+"


@dataclass(frozen=True)
class Origin:
    """The web tier behind the cache, and the health probe that decides how stale may be served."""

    host: str = setting(WEB_SERVICE, "origin DNS name (the web tier's ClusterIP Service) or IPv4 address", pattern=HOST)
    port: int = setting(WEB_PORT, "origin port (the web Service's port)", minimum=1, maximum=65535)
    health_path: str = setting("/healthz", "origin path the probe GETs; 200 means healthy", pattern=PREFIX)
    probe_interval_seconds: int = setting(5, "seconds between health probes", minimum=1, maximum=300)
    probe_window: int = setting(5, "probes remembered; `probe_threshold` of them must pass", minimum=1, maximum=64)
    probe_threshold: int = setting(
        3, "passing probes in the window that make the origin healthy", minimum=1, maximum=64
    )
    connect_timeout_ms: int = setting(1000, "TCP connect timeout to the origin", minimum=1, maximum=60_000)
    first_byte_timeout_ms: int = setting(15000, "wait for the origin's first response byte", minimum=1, maximum=300_000)
    between_bytes_timeout_ms: int = setting(10000, "longest pause between two body chunks", minimum=1, maximum=300_000)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.probe_threshold > self.probe_window:
            yield "probe_threshold", f"must be <= probe_window ({self.probe_window}), got {self.probe_threshold}"


@dataclass(frozen=True)
class PathRule:
    """How responses under one path prefix are cached."""

    prefix: str = setting("/", "URL path prefix the rule applies to; the longest matching prefix wins", pattern=PREFIX)
    kind: Literal["static", "api", "pass"] = setting(
        "api",
        "static: cookies dropped both ways; api: Authorization or a session cookie bypasses the cache; "
        "pass: never cached",
    )
    ttl_seconds: int = setting(
        0, "TTL when the origin sends no Surrogate-Control/Cache-Control/Expires (0: not cached)", minimum=0
    )
    grace_seconds: int = setting(
        10, "stale-while-revalidate: serve a stale copy this long while a fresh one is fetched", minimum=0
    )
    stale_if_error_seconds: int = setting(
        3600, "serve a stale copy this long while the origin's health probe fails", minimum=0
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.stale_if_error_seconds < self.grace_seconds:
            yield (
                "stale_if_error_seconds",
                f"must be >= grace_seconds ({self.grace_seconds}), got {self.stale_if_error_seconds}",
            )


DEFAULT_RULES = (
    PathRule(prefix="/static/", kind="static", ttl_seconds=86400, grace_seconds=60, stale_if_error_seconds=86400),
    PathRule(prefix="/products", kind="api", ttl_seconds=30, grace_seconds=10, stale_if_error_seconds=3600),
)
"""The sample service's static files and catalog reads; everything else stays off the cache path."""


@dataclass(frozen=True)
class CachePolicy:
    """What is cached for how long, what bypasses the cache, and who may invalidate it."""

    origin: Origin = setting(Origin, "the web tier behind the cache")
    rules: tuple[PathRule, ...] = setting(DEFAULT_RULES, "path-prefix rules; paths none matches are passed")
    session_cookies: tuple[str, ...] = setting(
        ("sid", "ryw"),
        "cookies that make an `api` request personal (session, read-your-writes marker): bypass the cache",
    )
    ignored_query_params: tuple[str, ...] = setting(
        ("utm_*", "gclid", "fbclid"),
        "query parameters removed from the URL and cache key; a trailing * matches a prefix",
    )
    invalidation_cidrs: tuple[str, ...] = setting(
        ("10.244.0.0/16", "10.96.0.0/12"),
        "networks allowed to PURGE/BAN besides loopback (kind's pod and service CIDRs)",
    )
    debug_headers: bool = setting(True, "add X-Cache (HIT/HIT-STALE/MISS/PASS) and X-Cache-Hits to responses")

    def problems(self) -> Iterator[tuple[str, str]]:
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.prefix in seen:
                yield f"rules[{index}].prefix", f"must be unique, got {rule.prefix!r} twice"
            seen.add(rule.prefix)
        for index, name in enumerate(self.session_cookies):
            if not _full_match(COOKIE, name):
                yield f"session_cookies[{index}]", f"must match {COOKIE}, got {name!r}"
        for index, name in enumerate(self.ignored_query_params):
            if not _full_match(PARAMETER, name):
                yield f"ignored_query_params[{index}]", f"must match {PARAMETER}, got {name!r}"
        for index, cidr in enumerate(self.invalidation_cidrs):
            try:
                ipaddress.IPv4Network(cidr, strict=True)
            except ValueError as error:
                yield f"invalidation_cidrs[{index}]", f"must be an IPv4 network such as 10.244.0.0/16 ({error})"


def _full_match(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def seconds(value: int) -> str:
    return f"{value}s"


def ordered_rules(policy: CachePolicy) -> list[PathRule]:
    """Longest prefix first, so the most specific rule wins."""
    return sorted(policy.rules, key=lambda rule: (-len(rule.prefix), rule.prefix))


def prefix_regex(prefix: str) -> str:
    """A path prefix as an anchored VCL regex: '.' is literal, nothing else needs escaping."""
    return "^" + prefix.replace(".", "[.]")


def alternation(names: tuple[str, ...]) -> str:
    return "|".join(name.replace(".", "[.]").replace("*", "[^=&]*") for name in names)


def backend(origin: Origin) -> str:
    probe_request = " ".join(
        f'"{line}"'
        for line in (
            f"GET {origin.health_path} HTTP/1.1",
            f"Host: {origin.host}",
            "Connection: close",
            "User-Agent: varnish-health-probe",
        )
    )
    return f"""backend origin {{
    .host = "{origin.host}";
    .port = "{origin.port}";
    .connect_timeout = {origin.connect_timeout_ms}ms;
    .first_byte_timeout = {origin.first_byte_timeout_ms}ms;
    .between_bytes_timeout = {origin.between_bytes_timeout_ms}ms;
    .probe = {{
        .request = {probe_request};
        .interval = {origin.probe_interval_seconds}s;
        .timeout = {max(1, origin.probe_interval_seconds // 2)}s;
        .window = {origin.probe_window};
        .threshold = {origin.probe_threshold};
        .initial = {origin.probe_threshold};
    }}
}}
"""


def acl(policy: CachePolicy) -> str:
    entries = ['    "127.0.0.1";', '    "::1";']
    for cidr in policy.invalidation_cidrs:
        network = ipaddress.IPv4Network(cidr)
        entries.append(f'    "{network.network_address}"/{network.prefixlen};')
    return "acl invalidators {\n" + "\n".join(entries) + "\n}\n"


INVALIDATE = f"""sub edge_invalidate {{
    if (local.socket != "{PURGE_SOCKET}") {{
        return (synth(405, "PURGE and BAN are served on the invalidation listener only"));
    }}
    if (client.ip !~ invalidators) {{
        return (synth(403, "Forbidden: not an in-cluster caller"));
    }}
    if (req.method == "PURGE") {{
        call edge_normalise;
        return (purge);
    }}
    if (req.http.X-Ban-Tag) {{
        if (req.http.X-Ban-Tag !~ "^{TAG}$") {{
            return (synth(400, "X-Ban-Tag must match {TAG}"));
        }}
        if (std.ban("obj.http.Surrogate-Key ~ (^|[[:space:]])" + regsuball(req.http.X-Ban-Tag, "[.]", "[.]")
                + "([[:space:]]|$)")) {{
            return (synth(200, "Banned"));
        }}
        return (synth(400, std.ban_error()));
    }}
    if (req.http.X-Ban-Prefix) {{
        if (req.http.X-Ban-Prefix !~ "^{PREFIX}$") {{
            return (synth(400, "X-Ban-Prefix must match {PREFIX}"));
        }}
        if (std.ban("obj.http.X-Edge-Url ~ ^" + regsuball(req.http.X-Ban-Prefix, "[.]", "[.]"))) {{
            return (synth(200, "Banned"));
        }}
        return (synth(400, std.ban_error()));
    }}
    return (synth(400, "BAN needs an X-Ban-Tag or an X-Ban-Prefix header"));
}}
"""


def normalise(policy: CachePolicy) -> str:
    """Host and URL rewritten to the cache key's form; each step runs only when it can change something."""
    lines = [
        "sub edge_normalise {",
        '    if (req.http.Host ~ "[A-Z:]") {',
        '        set req.http.Host = std.tolower(regsub(req.http.Host, ":[0-9]+$", ""));',
        "    }",
        '    if (req.url ~ "#") {',
        '        set req.url = regsub(req.url, "#.*$", "");',
        "    }",
        '    if (req.url ~ "[?]") {',
    ]
    if policy.ignored_query_params:
        pattern = f"([?&])({alternation(policy.ignored_query_params)})(=[^&]*)?(?=&|$)"
        lines += [
            f'        set req.url = regsuball(req.url, "{pattern}", "\\1");',
            '        set req.url = regsuball(req.url, "&&+", "&");',
            '        set req.url = regsub(req.url, "[?]&", "?");',
        ]
    lines += [
        '        set req.url = regsub(req.url, "[?&]+$", "");',
        "        set req.url = std.querysort(req.url);",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def recv_rule(policy: CachePolicy, rule: PathRule) -> list[str]:
    """The body of one rule's branch in vcl_recv."""
    if rule.kind == "pass":
        return ["        return (pass);"]
    body = [
        "        if (std.healthy(req.backend_hint) && !req.http.X-Edge-Stale-If-Error) {",
        f"            set req.grace = {seconds(rule.grace_seconds)};",
        "        }",
        "        if (req.http.Authorization) {",
        "            return (pass);",
        "        }",
    ]
    if rule.kind == "api" and policy.session_cookies:
        cookies = alternation(policy.session_cookies)
        body += [
            f'        if (req.http.Cookie ~ "(^|;[[:space:]]*)({cookies})=") {{',
            "            return (pass);",
            "        }",
        ]
    return [*body, "        unset req.http.Cookie;", "        return (hash);"]


def recv(policy: CachePolicy) -> str:
    lines = [
        "sub vcl_recv {",
        "    unset req.http.X-Edge-Cache;",
        "    if (req.restarts == 0) {",
        "        unset req.http.X-Edge-Stale-If-Error;",
        "    } elsif (req.http.X-Edge-Stale-If-Error) {",
        "        # lift the first pass's cap: the object's own stale-if-error window decides",
        "        set req.grace = 3650d;",
        "    }",
        f'    if (req.url == "{HEALTH_PATH}") {{',
        '        return (synth(200, "OK"));',
        "    }",
        f'    if (req.http.Upgrade ~ "(?i)websocket" || req.url ~ "{STREAMS_REGEX}") {{',
        "        return (pipe);",
        "    }",
        '    if (req.method == "PURGE" || req.method == "BAN") {',
        "        call edge_invalidate;",
        "    }",
        "    call edge_normalise;",
        '    if (req.method != "GET" && req.method != "HEAD") {',
        "        return (pass);",
        "    }",
    ]
    for index, rule in enumerate(ordered_rules(policy)):
        keyword = "if" if index == 0 else "} elsif"
        lines.append(f'    {keyword} (req.url ~ "{prefix_regex(rule.prefix)}") {{  # {rule.kind}')
        lines += recv_rule(policy, rule)
    if policy.rules:
        lines.append("    }")
    lines += ["    return (pass);", "}"]
    return "\n".join(lines) + "\n"


def response_rule(rule: PathRule) -> list[str]:
    """The body of one rule's branch in vcl_backend_response: the rule's defaults."""
    body = [
        f"        set beresp.grace = {seconds(rule.stale_if_error_seconds)};",
        '        if (!(beresp.http.Cache-Control ~ "(?i)(s-maxage|max-age)=[0-9]" || beresp.http.Expires)) {',
        f"            set beresp.ttl = {seconds(rule.ttl_seconds)};",
        "        }",
    ]
    if rule.kind == "static":
        body.append("        unset beresp.http.Set-Cookie;")
    return body


ORIGIN_DIRECTIVES = """sub edge_origin_directives {
    if (beresp.http.Surrogate-Control ~ "(?i)max-age=[0-9]") {
        set beresp.ttl = std.duration(
            regsub(beresp.http.Surrogate-Control, "(?i)^.*max-age=([0-9]+).*$", "\\1s"), beresp.ttl);
    }
    if (beresp.http.Surrogate-Control ~ "(?i)stale-if-error=[0-9]") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Surrogate-Control, "(?i)^.*stale-if-error=([0-9]+).*$", "\\1s"), beresp.grace);
    } elsif (beresp.http.Cache-Control ~ "(?i)stale-if-error=[0-9]") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Cache-Control, "(?i)^.*stale-if-error=([0-9]+).*$", "\\1s"), beresp.grace);
    }
}
"""


def backend_response(policy: CachePolicy) -> str:
    lines = [
        "sub vcl_backend_response {",
        "    # stored on the object so that bans test obj.* only (lurker-friendly)",
        "    set beresp.http.X-Edge-Url = bereq.url;",
        "    if (bereq.uncacheable) {",
        "        return (deliver);",
        "    }",
        "    if (beresp.status >= 500) {",
        "        # never stored over a stale copy: a background refresh keeps serving it,",
        "        # a client's request is retried on it (vcl_synth)",
        "        return (abandon);",
        "    }",
    ]
    cached = [rule for rule in ordered_rules(policy) if rule.kind != "pass"]
    for index, rule in enumerate(cached):
        keyword = "if" if index == 0 else "} elsif"
        lines.append(f'    {keyword} (bereq.url ~ "{prefix_regex(rule.prefix)}") {{  # {rule.kind}')
        lines += response_rule(rule)
    if cached:
        lines.append("    }")
    lines.append("    # Surrogate-Control beats Cache-Control; both beat the rule's defaults")
    lines.append("    call edge_origin_directives;")
    lines.append("    # then the built-in rules: Set-Cookie, no-store/private, TTL <= 0 -> not cached")
    lines.append("}")
    return "\n".join(lines) + "\n"


BACKEND_ERROR = """sub vcl_backend_error {
    if (!bereq.uncacheable) {
        return (abandon);
    }
}
"""

STALE_IF_ERROR = """sub vcl_synth {
    # a cache miss whose fetch failed: once more, accepting any stale copy still in grace
    if (resp.status == 503 && req.restarts == 0 && req.http.X-Edge-Cache == "MISS") {
        set req.http.X-Edge-Stale-If-Error = "1";
        return (restart);
    }
}
"""

STREAMS_REGEX = "^(" + "|".join(path.replace(".", "[.]") for path in STREAM_PATHS) + ")([/?]|$)"
"""A URL on one of the stream paths, whole segments only (`/wsx` is not `/ws`)."""

PIPE = """sub vcl_pipe {
    # a WebSocket handshake reaches the origin whole: Upgrade and Connection are hop-by-hop
    if (req.http.Upgrade) {
        set bereq.http.Upgrade = req.http.Upgrade;
        set bereq.http.Connection = req.http.Connection;
    }
}
"""

BACKEND_FETCH = """sub vcl_backend_fetch {
    unset bereq.http.X-Edge-Cache;
    unset bereq.http.X-Edge-Stale-If-Error;
}
"""

HASH = """sub vcl_hash {
    hash_data(req.url);
    if (req.http.Host) {
        hash_data(req.http.Host);
    } else {
        hash_data(server.ip);
    }
    return (lookup);
}
"""

MARKERS = """sub vcl_hit {
    if (obj.ttl <= 0s) {
        set req.http.X-Edge-Cache = "HIT-STALE";
    } else {
        set req.http.X-Edge-Cache = "HIT";
    }
}

sub vcl_miss {
    if (req.http.X-Edge-Stale-If-Error) {
        return (synth(503, "Origin failing and no stale copy"));
    }
    set req.http.X-Edge-Cache = "MISS";
}

sub vcl_pass {
    set req.http.X-Edge-Cache = "PASS";
}
"""


def deliver(policy: CachePolicy) -> str:
    lines = [
        "sub vcl_deliver {",
        "    unset resp.http.X-Edge-Url;",
        "    unset resp.http.Surrogate-Key;",
        "    unset resp.http.Surrogate-Control;",
    ]
    if policy.debug_headers:
        lines += [
            "    set resp.http.X-Cache = req.http.X-Edge-Cache;",
            "    set resp.http.X-Cache-Hits = obj.hits;",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_vcl(policy: CachePolicy) -> str:
    """The complete default.vcl for `policy`."""
    header = "vcl 4.1;\n\nimport std;\n\n# Generated by components/edge_cache_vcl.py from the stack's cache policy.\n"
    parts = [
        header,
        backend(policy.origin),
        acl(policy),
        INVALIDATE,
        normalise(policy),
        ORIGIN_DIRECTIVES,
        recv(policy),
        HASH,
        MARKERS,
        PIPE,
        BACKEND_FETCH,
        backend_response(policy),
        BACKEND_ERROR,
        STALE_IF_ERROR,
        deliver(policy),
    ]
    return "\n".join(parts)
