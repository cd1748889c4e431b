"""A reader of the push stream `GET /api/v1/events/stream` for tests: a thread puts each raw
line and each event (kind, data) in a queue, so a test waits on the event itself."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

import httpx

WAIT = 30.0  # seconds an event may take on a loaded machine (waits end as soon as it comes)


class Stream:
    """A stream read in a thread: its raw lines and its events (kind, data), each in a queue."""

    def __init__(self, base_url: str, query: str, token: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=60), headers={"Authorization": f"Bearer {token}"})
        self._response = self._client.send(self._client.build_request("GET", f"{base_url}/api/v1/events/stream?{query}"),
                                           stream=True)
        assert self._response.status_code == 200, self._response.read()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.next()[0] == "hello"  # subscribed: what happens from now on is streamed

    def _read(self) -> None:
        kind, data = "", ""
        try:
            for line in self._response.iter_lines():
                self.lines.put(line)
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    self.events.put((kind, json.loads(data)))
                    kind, data = "", ""
        except httpx.HTTPError:
            pass

    def next(self, timeout: float = WAIT) -> tuple[str, dict[str, Any]]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stream event within {timeout} s") from None

    def until(self, predicate: Any, timeout: float = WAIT) -> list[tuple[str, dict[str, Any]]]:
        """Events up to and including the first one `predicate(kind, data)` accepts."""
        seen = []
        while True:
            item = self.next(timeout)
            seen.append(item)
            if predicate(*item):
                return seen

    def close(self) -> None:
        self._response.close()
        self._client.close()
