"""A real HTTP webhook receiver for the alert tests: a threading http.server on a free port in
the test process that records every request and answers per path — `ok` (200), `flaky` (500 to
the first `fail_first` attempts of each delivery, then 200), `hang` (holds the request until
released), `down` (503 while `down` is set, else 200)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    answered: int = 0


@dataclass
class Behaviour:
    fail_first: int = 2
    down: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.behaviour = Behaviour()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                entry = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length),
                                 time.monotonic())
                with receiver._lock:
                    receiver.requests.append(entry)
                entry.answered = receiver._answer(entry)
                try:
                    self.send_response(entry.answered)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the controller gave up waiting

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _answer(self, entry: Received) -> int:
        behaviour = self.behaviour
        if entry.path.startswith("/flaky"):
            delivery = entry.headers.get("x-fleet-delivery")
            earlier = sum(1 for r in self.of("/flaky") if r.headers.get("x-fleet-delivery") == delivery)
            return 500 if earlier <= behaviour.fail_first else 200
        if entry.path.startswith("/hang"):
            behaviour.release.wait(60)
            return 200
        if entry.path.startswith("/down"):
            return 503 if behaviour.down.is_set() else 200
        return 200

    def of(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path)]

    def close(self) -> None:
        self.behaviour.release.set()
        self.server.shutdown()
        self.server.server_close()
