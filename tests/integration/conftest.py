"""Fixtures shared by the integration modules that need the simulated cluster's API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testsupport.control_plane import ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The simulated cluster's control plane (no stack), started once for the modules that use it."""
    plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()
