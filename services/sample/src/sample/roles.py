"""Roles: one image, several services. `ROLE` picks which paths a process serves.

`PATHS` is the ownership table the kit's gateway routes by (path prefixes); every role also
serves `COMMON` (probes, metrics, its own OpenAPI document). A path owned by another role is a 404.
Role `all` serves everything, as phases 1-5 run the service; `worker` serves only `COMMON` and
consumes jobs.
"""

from __future__ import annotations

PATHS: dict[str, tuple[str, ...]] = {
    "auth": ("/users", "/sessions", "/me"),
    "catalog": ("/products", "/static", "/events", "/ws", "/realtime"),
    "orders": ("/orders", "/jobs"),
    "worker": (),
}
COMMON = ("/healthz", "/readyz", "/metrics", "/openapi.json")


def owner(path: str) -> str | None:
    """The role whose prefix covers `path` (a prefix matches itself and what follows a `/`), if any."""
    for role, prefixes in PATHS.items():
        if any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes):
            return role
    return None


def serves(role: str, path: str) -> bool:
    """True when a process with ROLE=`role` answers `path` (a route path or OpenAPI path template)."""
    return role == "all" or path in COMMON or owner(path) == role
