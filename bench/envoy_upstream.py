"""A controllable HTTP upstream on loopback, for the Envoy tests and benchmark.

`python bench/envoy_upstream.py PORT` serves HTTP/1.1 on 127.0.0.1:PORT. Every path answers
according to the current mode, except the control paths, which are not counted:

- `PUT /_mode/ok` 200, `/_mode/fail` 500, `/_mode/busy` 503, `/_mode/slow` 200 after `SLOW_SECONDS`,
  `/_mode/hang` never answers (the connection stays open until the client gives up);
- `GET /_stats` -> JSON `{"hits": requests served, "max_in_flight": highest concurrency seen}`;
- `DELETE /_stats` resets both.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 0.5
MODES = {"ok", "fail", "busy", "slow", "hang"}


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "ok"
        self.hits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.stopped = threading.Event()


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per request would dominate the benchmark."""

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        mode = self.path.removeprefix("/_mode/")
        if mode not in MODES:
            self.reply(400, f"mode must be one of {sorted(MODES)}, got {mode!r}".encode())
            return
        with STATE.lock:
            STATE.mode = mode
        self.reply(200, mode.encode())

    def do_DELETE(self) -> None:
        with STATE.lock:
            STATE.hits = STATE.max_in_flight = 0
        self.reply(200, b"reset")

    def do_GET(self) -> None:
        if self.path == "/_stats":
            with STATE.lock:
                stats = {"hits": STATE.hits, "max_in_flight": STATE.max_in_flight}
            self.reply(200, json.dumps(stats).encode())
            return
        with STATE.lock:
            STATE.hits += 1
            STATE.in_flight += 1
            STATE.max_in_flight = max(STATE.max_in_flight, STATE.in_flight)
            mode = STATE.mode
        try:
            self.answer(mode)
        finally:
            with STATE.lock:
                STATE.in_flight -= 1

    def answer(self, mode: str) -> None:
        if mode == "hang":
            STATE.stopped.wait()
            return
        if mode == "slow":
            time.sleep(SLOW_SECONDS)
        if mode == "fail":
            self.reply(500, b"failing on purpose")
        elif mode == "busy":
            self.reply(503, b"busy on purpose")
        else:
            self.reply(200, b"ok")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        STATE.stopped.set()


if __name__ == "__main__":
    main()
