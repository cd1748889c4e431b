"""The Celery side of the benchmarks: an app on Redis (broker and result backend) with one
trivial `echo` task, what a Python user would reach for instead of the fleet.

Workers are started by the benchmarks as `celery -A benchmarks.celery_echo worker -Q <queue>`,
with the Redis URL in BENCH_CELERY_URL; clients call `make_app(url)` (one app per thread: a
Celery app's result consumer is not meant to be shared across threads).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

TASK_NAME = "bench.echo"


def make_app(redis_url: str) -> Celery:
    app = Celery("bench", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=3600,
    )

    @app.task(name=TASK_NAME, shared=False)
    def echo(message: Any) -> Any:
        return message

    return app


# The worker's app (`celery -A benchmarks.celery_echo`): Celery looks up the module's `app`.
app = make_app(os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/0"))
