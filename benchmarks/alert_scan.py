"""How long one pass of alert detection takes at fleet size (docs/architecture.md#alerts):
`--devices` devices of which half are offline with an alert already recorded, `--tasks` task
rows of which 10 % failed over the last two days, on SQLite (default) or PostgreSQL (`--postgres`).

    python -m benchmarks.alert_scan --devices 10000 --tasks 200000 [--postgres]

Prints the median of `--passes` passes of `detect` with every alert already recorded (the
steady state: what the lease holder pays every FLEET_ALERT_INTERVAL), and the first pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from config.settings_alerts import parse_rules
from controller.alerts.detect import detect
from controller.db import create_db_engine, create_read_sessionmaker, create_sessionmaker, migrate
from controller.models import Device, DeviceConnection, Task
from schemas.common import utcnow

RULES = parse_rules([
    {"name": "off", "kind": "device_offline", "minutes": 5, "url": "https://example.com/h"},
    {"name": "pres", "kind": "presence", "url": "https://example.com/h"},
    {"name": "fail", "kind": "task_failed", "url": "https://example.com/h"},
    {"name": "exp", "kind": "account_login_expired", "url": "https://example.com/h"},
])


def fill(sessions: sessionmaker[Session], devices: int, tasks: int) -> None:
    now = utcnow()
    with sessions() as session:
        connection = session.connection()
        connection.execute(insert(Device), [
            {"id": f"pc-{n:05d}", "status": "offline" if n % 2 else "online", "created_at": now, "groups": []}
            for n in range(devices)])
        connection.execute(insert(DeviceConnection), [
            {"device_id": f"pc-{n:05d}", "state": state, "session_id": "s", "at": now - timedelta(hours=1)}
            for n in range(devices) for state in (("online", "offline") if n % 2 else ("online",))])
        for start in range(0, tasks, 20_000):
            connection.execute(insert(Task), [
                {"id": f"t-{n}", "device_id": f"pc-{n % devices:05d}", "type": "upload", "status":
                 "failed" if n % 10 == 0 else "succeeded", "origin": "api", "params": {}, "created_at": now,
                 "updated_at": now, "finished_at": now - timedelta(seconds=(n * 172_800) // tasks)}
                for n in range(start, min(tasks, start + 20_000))])
        session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.postgres:
            from tests.databases import fresh_postgres

            url = stack.enter_context(fresh_postgres("fleet_bench", lambda problem: exit(problem)))
        else:
            url = f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'c.db'}"
        engine = create_db_engine(url)
        migrate(engine)
        sessions = create_sessionmaker(engine)
        reads = create_read_sessionmaker(sessions)
        fill(sessions, args.devices, args.tasks)
        started, recorded, catch_up = time.perf_counter(), 0, 0
        while True:  # the first passes record every alert, BATCH per rule a pass
            with sessions() as session, reads() as reader:
                raised = len(detect(session, RULES, utcnow(), reader))
            recorded, catch_up = recorded + raised, catch_up + 1
            if not raised:
                break
        print(f"catching up: {recorded} alerts recorded in {catch_up} passes, "
              f"{time.perf_counter() - started:.1f} s")
        times = [0.0]
        for _ in range(args.passes):
            started = time.perf_counter()
            with sessions() as session, reads() as reader:
                assert not detect(session, RULES, utcnow(), reader)
            times.append(time.perf_counter() - started)
        print(f"{engine.dialect.name}, {args.devices} devices, {args.tasks} tasks: steady pass median "
              f"{statistics.median(times[1:]) * 1000:.1f} ms (min {min(times[1:]) * 1000:.1f}, max "
              f"{max(times[1:]) * 1000:.1f}) over {args.passes} passes")
        engine.dispose()


if __name__ == "__main__":
    main()
