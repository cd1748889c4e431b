"""Job rollout passes on PostgreSQL (a fresh database from the `postgres_url` fixture): the
rate rollout's service test passes there too, and two controllers' passes racing at the same moment
over one job create each run once and publish it once (primary keys and the compare-and-set on
the job's version arbitrate; the `jobs` lease normally keeps the second from running at all)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import Job, Task
from controller.services import job_engine, jobs
from schemas.common import utcnow
from schemas.jobs import JobCreate
from tests.services_kit import FakePublisher, go_online
from tests.unit import test_job_services as kit

pytestmark = pytest.mark.integration

DEVICES = 40


def test_job_services_and_racing_passes_on_postgresql(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    migrate(engine)
    sessions = create_sessionmaker(engine)
    try:
        kit.test_rate_rollout_creates_runs_at_its_pace_once_each_and_finishes(sessions, FakePublisher())
        publisher = FakePublisher()
        for n in range(DEVICES):
            go_online(sessions, f"race-{n:03d}", groups=["race"])
        with sessions() as session:
            job = jobs.stage_job(session, JobCreate.model_validate(
                {"type": "echo", "target": {"groups": ["race"]}, "rollout": {"kind": "batches", "size": 10, "pause": 60}}
            ), publisher)
            session.commit()
        now = utcnow()
        barrier = threading.Barrier(2)

        def controller() -> None:
            with sessions() as session:
                barrier.wait()
                job_engine.run_pass(session, publisher, now, pass_interval=1.0, max_runs=1000)

        for _round in range(3):  # the same moment, three times: one batch only
            racers = [threading.Thread(target=controller) for _ in range(2)]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join(30)
        with sessions() as session:
            runs = session.scalar(select(func.count()).where(Task.job_id == job.id))
            stored = session.get(Job, job.id)
        sent = [envelope.id for _topic, envelope in publisher.sent if (envelope.id or "").startswith(job.id)]
        assert runs == 10 and len(sent) == 10 and len(set(sent)) == 10, (runs, sent)
        assert stored is not None and stored.runs_created == 10 and stored.next_run_at is not None
        assert stored.next_run_at - now == timedelta(seconds=60)
    finally:
        engine.dispose()
