"""Phase 2 on kind: Postgres in its own StatefulSet with a volume; the web tier reaches it."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e
PHASE = 2


def test_database_is_its_own_statefulset_with_a_volume(kit: Any, deployed: str) -> None:
    postgres = kit.json("get", "statefulset", "postgres", "-n", deployed)
    assert postgres["status"].get("readyReplicas") == 1
    assert postgres["spec"]["volumeClaimTemplates"]
    claims = kit.json("get", "pvc", "-n", deployed)["items"]
    assert any(claim["status"]["phase"] == "Bound" for claim in claims)


def test_web_is_ready_against_the_database(kit: Any, deployed: str) -> None:
    with kit.port_forward(deployed, "svc/web", 80) as port:
        assert kit.http(f"http://127.0.0.1:{port}/readyz")[0] == 200
