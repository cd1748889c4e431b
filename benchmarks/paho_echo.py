"""The raw paho floor: "devices" that answer every task at once, and a sender that measures
round trips itself. Same topics and QoS 1 as the fleet's wire contract, TCP_NODELAY on every
socket (the project's `create_client`), no SQL, no journal: what the broker and paho alone cost.

An echo device process, started by the benchmarks:

    python -m benchmarks.paho_echo --port 1883 bench-0 bench-1
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from broker.connection import BrokerAddress, create_client


def run_echo_devices(port: int, device_ids: list[str]) -> None:
    """Each id gets its own MQTT connection; a task on devices/<id>/tasks is answered on
    devices/<id>/results with a `succeeded` event carrying the task's params as its result."""
    clients = []
    for device_id in device_ids:
        client = create_client(BrokerAddress("127.0.0.1", port), f"paho-echo-{device_id}")

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any, device_id: str = device_id) -> None:
            c.subscribe(f"devices/{device_id}/tasks", qos=1)

        def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage, device_id: str = device_id) -> None:
            task = json.loads(msg.payload)
            event = {"task_id": task["id"], "event": "succeeded", "seq": 1, "result": task.get("params")}
            c.publish(f"devices/{device_id}/results", json.dumps(event), qos=1)

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        clients.append(client)
    threading.Event().wait()  # until killed


class PahoSender:
    """Publishes tasks to the echo devices and times each round trip at the sender."""

    def __init__(self, port: int, window: int = 1) -> None:
        self._lock = threading.Lock()
        self._sent: dict[str, float] = {}
        self._waiters: dict[str, threading.Event] = {}
        self.round_trips: list[float] = []
        self._window = threading.Semaphore(window)
        self._subscribed = threading.Event()
        self.last_answer = 0.0
        self.client = create_client(BrokerAddress("127.0.0.1", port), f"paho-sender-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(max(20, window))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("devices/+/results", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the paho sender could not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        task_id = json.loads(msg.payload)["task_id"]
        now = time.perf_counter()
        with self._lock:
            sent = self._sent.pop(task_id, None)
            waiter = self._waiters.pop(task_id, None)
            if sent is not None:
                self.round_trips.append(now - sent)
                self.last_answer = now
        if sent is not None:
            self._window.release()
        if waiter is not None:
            waiter.set()

    def send(self, device_id: str, task_id: str) -> threading.Event:
        """Blocks while `window` tasks are already in flight."""
        self._window.acquire()
        done = threading.Event()
        payload = json.dumps({"id": task_id, "type": "echo", "params": {"message": task_id}})
        with self._lock:
            self._waiters[task_id] = done
            self._sent[task_id] = time.perf_counter()
        self.client.publish(f"devices/{device_id}/tasks", payload, qos=1)
        return done

    def round_trip(self, device_id: str, task_id: str, timeout: float = 10) -> float | None:
        """One task, waited for: its round trip in seconds, None when no answer came in time."""
        started = time.perf_counter()
        if not self.send(device_id, task_id).wait(timeout):
            self.forget(task_id)
            return None
        return time.perf_counter() - started

    def forget(self, task_id: str) -> None:
        """Give up on a task: its window slot is freed, a late answer is ignored."""
        with self._lock:
            sent = self._sent.pop(task_id, None)
            self._waiters.pop(task_id, None)
        if sent is not None:
            self._window.release()

    def wait_ready(self, device_ids: list[str], timeout: float = 30) -> None:
        """Until every echo device answers (their subscriptions are in place)."""
        deadline = time.monotonic() + timeout
        for device_id in device_ids:
            while self.round_trip(device_id, f"ready-{device_id}-{time.monotonic_ns()}", 0.5) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"paho echo device {device_id} never answered")
        with self._lock:
            self.round_trips.clear()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._sent)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="broker port on 127.0.0.1")
    parser.add_argument("device_ids", nargs="+")
    args = parser.parse_args()
    run_echo_devices(args.port, args.device_ids)


if __name__ == "__main__":
    main()
