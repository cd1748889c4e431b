"""Shared parts of the side-by-side benchmarks (latency.py, throughput.py): processes that are
always cleaned up, a Redis server and Celery workers, a fresh PostgreSQL database, reading task
states straight from the controller's SQL, and the statistics and table helpers.

Celery, Redis and psycopg are imported where they are used, so `--help` works with the test
extra alone (the `bench` extra brings them)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from schemas.events import FINAL_STATUSES
from tests.databases import fresh_postgres
from tests.harness import Process, wait_for
from tests.ports import free_port, port_open

RESULTS = Path(__file__).parent / "results"
FINAL = tuple(sorted(FINAL_STATUSES))


class Processes:
    """Every process a benchmark starts, killed (-9) on exit, on an error, on Ctrl-C or SIGTERM."""

    def __init__(self) -> None:
        self.items: list[Process] = []

    def add(self, process: Process) -> Process:
        self.items.append(process)
        return process

    def kill_all(self) -> None:
        for process in reversed(self.items):
            with contextlib.suppress(Exception):
                process.kill()
        self.items.clear()

    def __enter__(self) -> Processes:
        # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so `finally` blocks run.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()


def interruptible(main: Callable[[], None]) -> None:
    """Runs a benchmark's main; Ctrl-C or SIGTERM ends it with one line, not a traceback (its
    processes were killed on the way out) and exit status 130."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: every process the benchmark started was stopped", file=sys.stderr)
        sys.exit(130)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def start_redis(work: Path, processes: Processes) -> str:
    """A private redis-server with no persistence on a free port; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(work)]
    process = processes.add(Process(f"redis-{port}", argv, work))
    process.start()
    wait_for(lambda: port_open(port) or not process.running, 10, what=f"redis-server on {port}")
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _redis_ping(url), 10, what="redis PING")
    return url


def _redis_ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def bench_env() -> dict[str, str]:
    """The environment for a benchmark's own helper processes: this checkout importable."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


def python_module(name: str, module: str, work: Path, *argv: str) -> Process:
    """`python -m <module> argv…` with this checkout importable, logging into `work`."""
    return Process(name, [sys.executable, "-m", module, *argv], work, bench_env())


def start_celery_workers(work: Path, processes: Processes, redis_url: str, queues: Sequence[str]) -> None:
    """One Celery worker process per queue (solo pool: one task at a time, like a device that
    runs its queue in order), each started with gossip, mingle and heartbeats off."""
    env = {**bench_env(), "BENCH_CELERY_URL": redis_url}
    for queue in queues:
        argv = [sys.executable, "-m", "celery", "-A", "benchmarks.celery_echo", "worker", "-Q", queue, "-P", "solo",
                "-c", "1", "-n", f"{queue}@bench", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--loglevel", "WARNING"]
        processes.add(Process(f"celery-{queue}", argv, work, env)).start()
    from benchmarks.celery_echo import make_app

    app = make_app(redis_url)
    try:
        def all_ready() -> bool:
            replies = app.control.ping(timeout=0.5) or []
            return len(replies) >= len(queues)

        wait_for(all_ready, 60, 0.2, f"{len(queues)} Celery workers answering ping")
    finally:
        app.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (trust auth), dropped afterwards."""
    with fresh_postgres("fleet_bench", lambda problem: sys.exit(f"{problem}; start it or pass --databases sqlite")) as url:
        yield url


class TaskStates:
    """Reads task states straight from the controller's database (what "recorded in SQL" means),
    on its own connection, autocommit, so every query sees the latest committed rows."""

    def __init__(self, database_url: str) -> None:
        self._sqlite = database_url.startswith("sqlite")
        if self._sqlite:
            self._conn: Any = sqlite3.connect(database_url.split("sqlite:///", 1)[1], isolation_level=None,
                                              check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._mark = "?"
        else:
            import psycopg

            self._conn = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
            self._mark = "%s"

    def status(self, task_id: str) -> str | None:
        row = self._conn.execute(f"SELECT status FROM tasks WHERE id = {self._mark}", (task_id,)).fetchone()
        return row[0] if row else None

    def finished(self, task_ids: Sequence[str]) -> dict[str, str]:
        """The final status of each of `task_ids` that has one (ask only about those still
        pending: a poll then costs little once most are done)."""
        final: dict[str, str] = {}
        marks_final = ",".join(f"'{status}'" for status in FINAL)
        for start in range(0, len(task_ids), 500):
            chunk = list(task_ids[start:start + 500])
            marks = ",".join([self._mark] * len(chunk))
            rows = self._conn.execute(
                f"SELECT id, status FROM tasks WHERE id IN ({marks}) AND status IN ({marks_final})", chunk
            ).fetchall()
            final.update(rows)
        return final

    def close(self) -> None:
        self._conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0–100): p99 of 500 values is the 495th smallest."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def spread(values: Sequence[float], digits: int = 1) -> str:
    """Median across repeats and the min–max range, e.g. `4.2 (3.9–5.0)`."""
    if not values:
        return "–"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None (and a hint) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return None
    return plt


def machine_note() -> str:
    """Where the figures came from: cores, load (other work on the machine skews them), commit."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        commit = ""
    return (f"{os.cpu_count()} cores, loopback, load average {load[0]:.1f} at the end of the run"
            + (f", commit {commit}" if commit else ""))


def setting(text: str) -> tuple[str, str]:
    """`--set KEY=VALUE`: a controller setting passed as FLEET_<KEY>."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lower(), value


def run_threads(clients: int, work: Callable[[Iterator[int]], None]) -> None:
    """`clients` threads sharing one counter of task numbers; re-raises the first error."""
    counter = itertools.count()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def numbers() -> Iterator[int]:
        while True:
            with lock:
                number = next(counter)
            yield number

    def body() -> None:
        try:
            work(numbers())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
