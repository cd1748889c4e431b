"""Measure how fast the controller records a burst of results, and whether the broker dropped any.

N simulated devices (raw paho, one connection, the wire contract's birth and events) each
publish their share of `succeeded` events for fresh task ids (recorded as ad hoc tasks) as fast
as possible, QoS 1. Measured: time from the first publish until every task is recorded final
(REST), and the lines of Mosquitto's log saying it dropped messages for the controller.

    .venv/bin/python -m benchmarks.ingest_burst --events 1000 --devices 100

Run it against another checkout's controller with PYTHONPATH=<that checkout> (the harness
starts `python -m cli controller`, which then imports from there).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from schemas.common import utcnow
from tests.harness import Broker, Controller, wait_for


def _birth(device_id: str) -> str:
    return json.dumps({"device_id": device_id, "state": "online", "session_id": "bench-s1", "at": utcnow().isoformat(),
                       "facts": {"name": device_id, "version": "0.1.0", "hostname": device_id, "os": "Linux",
                                 "python": "3.11", "task_types": ["echo"], "groups": [], "keepalive": 30}})


def _event(device_id: str, n: int) -> str:
    return json.dumps({"task_id": f"burst-{device_id}-{n}", "device_id": device_id, "event": "succeeded", "seq": 0,
                       "attempt": 1, "at": utcnow().isoformat(), "session_id": "bench-s1", "result": {}})


def measure(kind: str, events: int, device_count: int) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(kind, work)
        broker.start()
        controller = Controller(broker, work)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-burst")
        try:
            controller.start()
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            ids = [f"sim-{d:04d}" for d in range(device_count)]
            for device_id in ids:
                client.publish(f"devices/{device_id}/status", _birth(device_id), qos=1, retain=True).wait_for_publish(10)

            def online() -> bool:
                page = controller.api.get("/api/v1/devices", params={"status": "online", "limit": 1}).json()
                return int(page["total"]) >= device_count

            wait_for(online, 60, 0.1, "all simulated devices online")
            started = time.monotonic()
            infos = [client.publish(f"devices/{ids[n % device_count]}/results", _event(ids[n % device_count], n), qos=1)
                     for n in range(events)]
            for info in infos:
                info.wait_for_publish(60)
            published = time.monotonic() - started

            def final() -> int:
                return int(controller.api.get("/api/v1/tasks", params={"status": "succeeded", "limit": 1}).json()["total"])

            recorded: float | None = None
            try:
                wait_for(lambda: final() >= events, 120, 0.05, "all results recorded")
                recorded = time.monotonic() - started
            except AssertionError:
                pass
            health = controller.api.get("/healthz").json()
            log_text = broker.process.log_path.read_text(errors="replace") if kind == "mosquitto" else ""
            return {"published_s": round(published, 2), "recorded_s": round(recorded, 2) if recorded else -1,
                    "recorded": final(), "broker_drop_lines": log_text.count("being dropped"),
                    "ingest_high_water": health.get("ingest_high_water", -1)}
        finally:
            client.loop_stop()
            client.disconnect()
            controller.process.stop()
            broker.process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--broker", choices=["mosquitto", "amqtt"], default="mosquitto")
    args = parser.parse_args()
    print(json.dumps({"broker": args.broker, "events": args.events, "devices": args.devices,
                      **measure(args.broker, args.events, args.devices)}))


if __name__ == "__main__":
    main()
