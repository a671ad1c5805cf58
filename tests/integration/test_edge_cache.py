"""The generated VCL under a real varnishd: hits, misses, key normalisation, bypass, grace, purge, ban, tags."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.edge_support import OriginServer, Varnish, loopback_policy, request, varnish_dir
from components.edge_cache import RUN_AS
from components.edge_cache_vcl import CachePolicy, Origin, PathRule, render_vcl
from testsupport.process import as_uid, require_binary

pytestmark = pytest.mark.integration

RULES = (
    PathRule(prefix="/static/", kind="static", ttl_seconds=3600, grace_seconds=0, stale_if_error_seconds=3600),
    PathRule(prefix="/api/", kind="api", ttl_seconds=60, grace_seconds=0, stale_if_error_seconds=60),
    PathRule(prefix="/api/private/", kind="pass"),
    PathRule(prefix="/swr/", kind="api", ttl_seconds=1, grace_seconds=5, stale_if_error_seconds=60),
)
POLICY = CachePolicy(rules=RULES, invalidation_cidrs=("10.244.0.0/16",))


@pytest.fixture(scope="module")
def varnishd() -> str:
    return require_binary("varnishd", "apt-get install varnish")


@pytest.fixture(scope="module")
def origin() -> Iterator[OriginServer]:
    server = OriginServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cache(varnishd: str, origin: OriginServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Varnish]:
    """One varnishd for the tests that leave the origin healthy; each test uses its own paths."""
    varnish = Varnish(varnishd, tmp_path_factory.mktemp("edge"), loopback_policy(POLICY, origin.port))
    yield varnish
    varnish.stop()


def test_default_policy_compiles(varnishd: str) -> None:
    """The stack's default VCL (origin `web`, here a name that resolves on this host) compiles."""
    policy = CachePolicy(origin=Origin(host="localhost"))
    directory = varnish_dir("compile")
    try:
        vcl = directory / "default.vcl"
        vcl.write_text(render_vcl(policy))
        command = as_uid(RUN_AS, [varnishd, "-C", "-f", str(vcl), "-n", str(directory / "work")])
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(directory)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VGC_function_vcl_recv" in result.stdout + result.stderr


def test_miss_then_hit_with_debug_headers(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/hit", b"v1")
    first = cache.get("/api/hit")
    second = cache.get("/api/hit")
    assert (first.status, first.body, first.cache) == (200, b"v1", "MISS")
    assert (second.status, second.body, second.cache) == (200, b"v1", "HIT")
    assert second.headers["x-cache-hits"] == "1"
    assert "age" in second.headers
    assert origin.hits("/api/hit") == 1
    assert "x-edge-url" not in second.headers


def test_cache_key_is_normalised(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/list", b"list")
    cache.get("/api/list?b=2&utm_source=news&a=1&gclid=x", Host="Shop.Example:8080")
    again = cache.get("/api/list?a=1&b=2", Host="shop.example")
    assert again.cache == "HIT"
    assert origin.hits("/api/list") == 1
    assert origin.seen.urls[-1] == "/api/list?a=1&b=2"
    other_host = cache.get("/api/list?a=1&b=2", Host="other.example")
    assert other_host.cache == "MISS"


def test_surrogate_control_beats_cache_control(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/surrogate", b"s", Cache_Control="max-age=1", Surrogate_Control="max-age=60")
    cache.get("/api/surrogate")
    time.sleep(1.5)
    later = cache.get("/api/surrogate")
    assert later.cache == "HIT"
    assert later.headers["cache-control"] == "max-age=1"
    assert "surrogate-control" not in later.headers


def test_cache_control_max_age_is_honoured(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/short", b"s", Cache_Control="public, max-age=1")
    cache.get("/api/short")
    assert cache.get("/api/short").cache == "HIT"
    time.sleep(1.5)
    assert cache.get("/api/short").cache == "MISS"
    assert origin.hits("/api/short") == 2


def test_rule_default_ttl_without_origin_directives(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/plain", b"p")
    cache.get("/api/plain")
    time.sleep(1.2)
    assert cache.get("/api/plain").cache == "HIT"


@pytest.mark.parametrize("directive", ["private", "no-store", "no-cache"])
def test_uncacheable_directives_are_respected(cache: Varnish, origin: OriginServer, directive: str) -> None:
    path = f"/api/uncacheable-{directive}"
    origin.set(path, b"u", Cache_Control=directive)
    cache.get(path)
    assert cache.get(path).cache != "HIT"
    assert origin.hits(path) == 2


def test_authorization_and_session_cookies_bypass(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/me", b"me")
    cache.get("/api/me")
    assert cache.get("/api/me", Authorization="Bearer t").cache == "PASS"
    assert cache.get("/api/me", Cookie="theme=dark; sid=abc").cache == "PASS"
    assert cache.get("/api/me", Cookie="ryw=123").cache == "PASS"
    assert origin.hits("/api/me") == 4
    assert origin.seen.headers["/api/me"]["Cookie"] == "ryw=123"


def test_other_cookies_are_dropped_not_bypassed(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/catalog", b"c")
    cache.get("/api/catalog", Cookie="theme=dark")
    assert cache.get("/api/catalog", Cookie="xsid=1").cache == "HIT"
    assert "Cookie" not in origin.seen.headers["/api/catalog"]


def test_static_drops_cookies_both_ways(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/static/app.css", b"css", Set_Cookie="tracking=1")
    first = cache.get("/static/app.css", Cookie="sid=abc")
    second = cache.get("/static/app.css", Cookie="sid=def")
    assert "set-cookie" not in first.headers
    assert second.cache == "HIT"
    assert origin.hits("/static/app.css") == 1


def test_set_cookie_response_is_not_cached(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/login-page", b"l", Set_Cookie="sid=new")
    cache.get("/api/login-page")
    assert cache.get("/api/login-page").headers["set-cookie"] == "sid=new"
    assert origin.hits("/api/login-page") == 2


def test_pass_rules_and_unmatched_paths_are_never_cached(cache: Varnish, origin: OriginServer) -> None:
    for path in ("/api/private/x", "/elsewhere"):
        origin.set(path, b"x", Cache_Control="public, max-age=60")
        cache.get(path)
        assert cache.get(path).cache == "PASS"
        assert origin.hits(path) == 2


def test_purge_drops_one_url_on_the_invalidation_listener(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/purged", b"v1")
    origin.set("/api/kept", b"k")
    cache.get("/api/purged?b=1&a=2")
    cache.get("/api/kept")
    answer = cache.invalidate("PURGE", "/api/purged?a=2&b=1&utm_medium=x")
    assert answer.status == 200
    origin.set("/api/purged", b"v2")
    fresh = cache.get("/api/purged?a=2&b=1")
    assert (fresh.cache, fresh.body) == ("MISS", b"v2")
    assert cache.get("/api/kept").cache == "HIT"


def test_purge_refused_on_the_public_listener(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/public-purge", b"p")
    cache.get("/api/public-purge")
    answer = request(cache.http_port, "/api/public-purge", "PURGE")
    assert answer.status == 405
    assert b"invalidation listener only" in answer.body
    assert request(cache.http_port, "/", "BAN", headers={"X-Ban-Prefix": "/"}).status == 405
    assert cache.get("/api/public-purge").cache == "HIT"


def test_purge_and_ban_refused_outside_the_acl(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/acl", b"a")
    cache.get("/api/acl")
    purge = cache.invalidate("PURGE", "/api/acl", source="127.0.0.2")
    ban = cache.invalidate("BAN", source="127.0.0.2", X_Ban_Prefix="/")
    assert (purge.status, ban.status) == (403, 403)
    assert b"not an in-cluster caller" in purge.body
    assert cache.get("/api/acl").cache == "HIT"


def test_ban_by_prefix(cache: Varnish, origin: OriginServer) -> None:
    for path in ("/api/banned/a", "/api/banned/b", "/api/unbanned"):
        origin.set(path, b"x")
        cache.get(path)
    assert cache.invalidate("BAN", X_Ban_Prefix="/api/banned/").status == 200
    assert cache.get("/api/banned/a").cache == "MISS"
    assert cache.get("/api/banned/b").cache == "MISS"
    assert cache.get("/api/unbanned").cache == "HIT"


def test_ban_by_surrogate_key(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/products/1", b"p1", Surrogate_Key="product-1 product-list")
    origin.set("/api/products/2", b"p2", Surrogate_Key="product-2 product-list")
    first = cache.get("/api/products/1")
    cache.get("/api/products/2")
    assert "surrogate-key" not in first.headers
    assert cache.invalidate("BAN", X_Ban_Tag="product").status == 200  # a key's prefix is not the key
    assert cache.invalidate("BAN", X_Ban_Tag="list").status == 200  # nor is its suffix
    assert cache.get("/api/products/1").cache == "HIT"
    assert cache.invalidate("BAN", X_Ban_Tag="product-1").status == 200
    assert cache.get("/api/products/1").cache == "MISS"
    assert cache.get("/api/products/2").cache == "HIT"
    assert cache.invalidate("BAN", X_Ban_Tag="product-list").status == 200
    assert cache.get("/api/products/1").cache == "MISS"
    assert cache.get("/api/products/2").cache == "MISS"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X_Ban_Tag": "a|b"}, b"X-Ban-Tag must match [A-Za-z0-9_.:-]+"),
        ({"X_Ban_Prefix": "/a b"}, b"X-Ban-Prefix must match"),
        ({}, b"BAN needs an X-Ban-Tag or an X-Ban-Prefix header"),
    ],
)
def test_malformed_bans_are_rejected(cache: Varnish, headers: dict[str, str], message: bytes) -> None:
    answer = cache.invalidate("BAN", **headers)
    assert answer.status == 400
    assert message in answer.body


def test_stale_while_revalidate_serves_stale_then_fresh(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/swr/item", b"v1")
    assert cache.get("/swr/item").cache == "MISS"
    time.sleep(1.3)  # TTL 1 s: stale, inside the 5 s grace
    origin.set("/swr/item", b"v2", delay=1.0)
    started = time.monotonic()
    stale = cache.get("/swr/item")
    assert (stale.body, stale.cache) == (b"v1", "HIT-STALE")
    assert time.monotonic() - started < 0.5  # served at once; the refresh runs in the background
    time.sleep(1.5)
    fresh = cache.get("/swr/item")
    assert (fresh.body, fresh.cache) == (b"v2", "HIT")


def test_failed_background_refresh_keeps_the_stale_copy(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/swr/broken", b"v1")
    cache.get("/swr/broken")
    time.sleep(1.3)
    origin.set("/swr/broken", b"boom", status=500)
    first = cache.get("/swr/broken")  # stale, and starts a refresh that gets a 500
    time.sleep(0.5)
    second = cache.get("/swr/broken")
    assert (first.body, first.cache) == (b"v1", "HIT-STALE")
    assert (second.status, second.body, second.cache) == (200, b"v1", "HIT-STALE")
    assert origin.hits("/swr/broken") >= 2


def test_a_failing_fetch_is_answered_from_the_stale_copy(cache: Varnish, origin: OriginServer) -> None:
    """The probe still says healthy, the copy is past its 5 s grace, the origin answers 500: stale-if-error."""
    origin.set("/swr/erroring", b"v1")
    cache.get("/swr/erroring")
    time.sleep(6.5)
    origin.set("/swr/erroring", b"boom", status=500)
    answer = cache.get("/swr/erroring")
    assert (answer.status, answer.body, answer.cache) == (200, b"v1", "HIT-STALE")
    assert cache.get("/swr/erroring").body == b"v1"  # the error was not stored over it


def test_a_failing_fetch_without_stale_copy_is_tried_once(cache: Varnish, origin: OriginServer) -> None:
    origin.set("/api/never-cached", b"boom", status=500)
    answer = cache.get("/api/never-cached")
    assert answer.status == 503
    assert origin.hits("/api/never-cached") == 1


def test_stale_served_while_origin_is_sick(varnishd: str, tmp_path: Path) -> None:
    origin = OriginServer()
    varnish = Varnish(varnishd, tmp_path, loopback_policy(POLICY, origin.port))
    try:
        origin.set("/swr/sick", b"v1")
        assert varnish.get("/swr/sick").cache == "MISS"
        origin.healthy = False
        time.sleep(6.5)  # past TTL (1 s) + healthy grace (5 s); a sick origin allows 60 s of staleness
        stale = varnish.get("/swr/sick")
        assert (stale.status, stale.body, stale.cache) == (200, b"v1", "HIT-STALE")
        origin.healthy = True
        origin.set("/swr/sick", b"v2")
        time.sleep(2.5)  # two good probes: healthy again, so the 5 s grace applies and the copy is too old
        fresh = varnish.get("/swr/sick")
        assert (fresh.body, fresh.cache) == (b"v2", "MISS")
    finally:
        varnish.stop()
        origin.stop()
