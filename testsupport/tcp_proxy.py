"""A TCP forwarder on loopback that a test can cut, to make a server unreachable for its clients.

    proxy = TcpProxy(target_port)      # listens on 127.0.0.1:proxy.port, forwards to 127.0.0.1:target_port
    proxy.cut()                        # open connections go silent, new ones are accepted and never answered
    proxy.restore()                    # forwarding again
    proxy.retarget(other_port)         # new connections go there (None: refused); open ones stay where they are
    proxy.retarget([a, b])             # ... to each in turn
    proxy.close()

A cut proxy behaves like a network partition, not like a stopped server: nothing is refused or
reset, so the client learns only from its own timeouts. Each direction of each connection is
pumped by a thread of its own, so a slow reader on one connection never holds up another.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from testsupport.process import LOOPBACK

CHUNK = 65536


class TcpProxy:
    """Forward 127.0.0.1:`port` to 127.0.0.1:`target` (or to each of several targets in turn)."""

    def __init__(self, target: int | None) -> None:
        self.targets = [] if target is None else [target]
        self._next = 0
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Stop forwarding: every byte in either direction is dropped from now on, connections stay open."""
        with self._lock:
            self._cut = True

    def restore(self) -> None:
        """Forward again; connections opened while cut stay silent (clients time out and reconnect)."""
        with self._lock:
            self._cut = False

    def retarget(self, target: int | list[int] | None) -> None:
        """Send new connections to `target`, or to each of a list in turn (None or []: close them at
        once), as a Service whose endpoints changed does; connections already open stay with their server."""
        with self._lock:
            self.targets = [] if target is None else [target] if isinstance(target, int) else list(target)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets = list(self._sockets)
        self._thread.join(timeout=5)
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        with self._lock:
            cut, targets = self._cut, self.targets
            self._next += 1
            self._sockets.append(client)
        client.settimeout(None)
        if cut:
            return  # accepted, never answered
        if not targets:
            client.close()
            return
        try:
            server = socket.create_connection((LOOPBACK, targets[self._next % len(targets)]), timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            self._sockets.append(server)
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy one direction until either end closes; while cut, read and drop."""
        try:
            while data := source.recv(CHUNK):
                with self._lock:
                    cut = self._cut
                if not cut:
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
