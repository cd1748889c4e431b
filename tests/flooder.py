"""One device login that floods the controller: retained births with an ever-new session id,
and results for ever-new task ids, as fast as it is paced (QoS 1, a raw paho client speaking
the wire contract). Used by tests/integration/test_flood.py and benchmarks/flood.py."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from broker.connection import BrokerAddress, create_client
from schemas.common import utcnow

TICK = 0.01  # seconds between two paced bursts of publishes


def birth(device_id: str, session_id: str, state: str = "online") -> str:
    """A birth (or, with state "offline", a will) as a device daemon sends it."""
    body: dict[str, object] = {"device_id": device_id, "state": state, "session_id": session_id}
    if state == "online":
        body["at"] = utcnow().isoformat()
        body["facts"] = {"name": device_id, "version": "0.1.0", "hostname": device_id, "os": "Linux",
                         "python": "3.11", "task_types": ["echo"], "groups": [], "keepalive": 30}
    return json.dumps(body)


def result(device_id: str, task_id: str, session_id: str) -> str:
    return json.dumps({"task_id": task_id, "device_id": device_id, "event": "accepted", "seq": 0, "attempt": 1,
                       "at": utcnow().isoformat(), "session_id": session_id})


@dataclass
class FloodReport:
    births: int = 0
    results: int = 0
    seconds: float = 0.0
    last_session: str = ""


class Flooder:
    """A raw login for `device_id` that publishes births and results at a given pace."""

    def __init__(self, port: int, device_id: str = "flooder") -> None:
        self.device_id = device_id
        self.client = create_client(BrokerAddress.from_url(f"mqtt://127.0.0.1:{port}"), f"flood-{device_id}")
        self.client.max_inflight_messages_set(200)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.report = FloodReport()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flood(self, births: int, results: int, seconds: float) -> FloodReport:
        """Publish `births` births and `results` results, interleaved, spread evenly over
        `seconds` (as fast as possible when 0); returns once the broker acknowledged them all.
        `stop()` from another thread ends it early."""
        total = births + results
        status_topic, results_topic = f"devices/{self.device_id}/status", f"devices/{self.device_id}/results"
        started = time.monotonic()
        infos: list[mqtt.MQTTMessageInfo] = []
        sent_births = sent_results = 0
        for n in range(total):
            if self._stop.is_set():
                break
            if seconds > 0 and n % max(1, int(total * TICK / seconds)) == 0:
                delay = started + seconds * n / total - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if sent_births * results <= sent_results * births and sent_births < births:
                session = f"flood-{sent_births}"
                infos.append(self.client.publish(status_topic, birth(self.device_id, session), qos=1, retain=True))
                sent_births += 1
                self.report.last_session = session
            else:
                task = f"flood-task-{sent_results}"
                infos.append(self.client.publish(results_topic, result(self.device_id, task, "flood"), qos=1))
                sent_results += 1
        for info in infos:
            info.wait_for_publish(60)
        self.report.births, self.report.results = sent_births, sent_results
        self.report.seconds = time.monotonic() - started
        return self.report

    def start(self, births: int, results: int, seconds: float) -> None:
        """`flood` in a thread of its own; `join()` waits for it."""
        self._thread = threading.Thread(target=self.flood, args=(births, results, seconds), daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while `start`'s flood still publishes."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 120) -> FloodReport:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the flood did not finish"
        return self.report

    def publish_status(self, session_id: str, state: str = "online") -> None:
        info = self.client.publish(f"devices/{self.device_id}/status", birth(self.device_id, session_id, state),
                                   qos=1, retain=True)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
