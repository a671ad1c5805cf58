"""A TCP forwarder on loopback that a test can cut, to make a server unreachable for one client.

    proxy = TcpProxy(target_port)      # listens on 127.0.0.1:proxy.port, forwards to 127.0.0.1:target_port
    proxy.cut()                        # open connections go silent, new ones are accepted and never answered
    proxy.restore()                    # forwarding again
    proxy.retarget(other_port)         # new connections go there (None: refused); open ones stay where they are
    proxy.retarget([a, b])             # ... to each in turn
    proxy.close()

A cut proxy behaves like a network partition, not like a stopped server: nothing is refused or
reset, so the client learns only from its own timeouts.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from testsupport.process import LOOPBACK

CHUNK = 65536


class TcpProxy:
    """Forward 127.0.0.1:`port` to 127.0.0.1:`target`, one thread for all connections."""

    def __init__(self, target: int | None) -> None:
        self.targets = [] if target is None else [target]
        self._next = 0
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)
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
        self._thread.join(timeout=5)
        for sock in [self._listener, *self._peers, *self._held]:
            sock.close()
        self._selector.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._forward(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            cut, targets = self._cut, self.targets
            self._next += 1
        if cut:
            self._held.append(client)  # accepted, never answered
            return
        if not targets:
            client.close()
            return
        target = targets[self._next % len(targets)]
        try:
            server = socket.create_connection((LOOPBACK, target), timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        client.setblocking(True)  # recv runs only once the selector says data is there; sendall may block
        for sock in (client, server):
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[server] = server, client

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        with self._lock:
            cut = self._cut
        if cut:
            return
        try:
            self._peers[sock].sendall(data)
        except OSError:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for one in (sock, peer):
            if one is None:
                continue
            self._peers.pop(one, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(one)
            one.close()
