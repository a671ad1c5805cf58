"""A Service's routing on loopback: new connections go to the member its EndpointSlices name.

Pods of the simulated cluster have made-up addresses; their containers run here on loopback
(testsupport/patroni.py). `ServiceProxy` reads the Service's EndpointSlices from the real API
server every `interval` seconds, as kube-proxy watches them, and sends each new connection to the
loopback port of a member whose pod address is ready there (each in turn, when several are); with
none ready, connections are refused. Connections already open stay with their server, as conntrack keeps them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from testsupport.control_plane import ControlPlane
from testsupport.tcp_proxy import TcpProxy


class ServiceProxy:
    """`127.0.0.1:<port>` behaving as Service `service` in `namespace`."""

    def __init__(
        self,
        plane: ControlPlane,
        namespace: str,
        service: str,
        port_of: Callable[[str], int | None],
        interval: float = 0.5,
    ) -> None:
        self.plane = plane
        self.namespace = namespace
        self.service = service
        self.port_of = port_of
        """The loopback port of the member whose pod has this address (None: none of ours)."""
        self.interval = interval
        self.proxy = TcpProxy(None)
        self.port = self.proxy.port
        self.changes: list[tuple[int, ...]] = []
        """The ready members' ports, each time they changed."""
        self._stop = threading.Event()
        self._refresh()
        self._thread = threading.Thread(target=self._run, name=f"service-{service}", daemon=True)
        self._thread.start()

    def ready_addresses(self) -> list[str]:
        slices = self.plane.get(
            "endpointslices", "-n", self.namespace, "-l", f"kubernetes.io/service-name={self.service}"
        )
        return sorted(
            address
            for item in slices["items"]
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint["addresses"]
        )

    def _refresh(self) -> None:
        ports = tuple(port for address in self.ready_addresses() if (port := self.port_of(address)) is not None)
        if not self.changes or self.changes[-1] != ports:
            self.changes.append(ports)
        self.proxy.retarget(list(ports))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._refresh()
            except AssertionError:  # the API server did not answer this time: keep the last routing
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.proxy.close()
