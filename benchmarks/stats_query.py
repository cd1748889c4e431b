"""How long `GET /api/v1/stats` takes with a million task rows, on SQLite and on PostgreSQL.

    .venv/bin/python -m benchmarks.stats_query                    # 1,000,000 rows, both databases
    .venv/bin/python -m benchmarks.stats_query --rows 100000 --databases sqlite

Fills a fresh database (migrated by the controller's own alembic chain, so with migration
0011's indexes) with `--rows` tasks created over the last `--days` days on `--devices` devices
(executemany in one transaction on SQLite, COPY on PostgreSQL, then ANALYZE), then times the
statistics service the endpoint calls (`controller.services.stats.compute`: every count, rate
and median, 9 queries) for the windows 1h, 24h and 7d, and the two counts behind the SQL
gauges of /metrics (`controller.metrics.count_rows`, over every row). "cold" is the first run
on a new engine (new connections; the OS page cache is not dropped), "warm" the next
`--repeat` runs: median and min–max. Writes results/stats_query.md and .png.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, interruptible, machine_note, markdown_table, postgres_database, pyplot, spread
from controller.db import create_db_engine, create_read_sessionmaker, create_sessionmaker, migrate
from controller.metrics import count_rows
from controller.services import stats
from schemas.stats import StatsFilters

COLUMNS = ("id", "device_id", "type", "account", "params", "platform", "status", "origin", "created_at", "updated_at",
           "started_at", "finished_at", "dispatch_count", "attempt", "max_retries", "retry_backoff", "resends")
STATUSES = (("succeeded", 85), ("failed", 8), ("timed_out", 2), ("rejected", 2), ("running", 2), ("queued", 1))
TYPES = (("echo", 40), ("upload", 20), ("chat", 20), ("login", 10), ("sleep", 10))
BROWSER = frozenset({"upload", "chat", "login"})
PLATFORMS = ("reference", "douyin")
WINDOWS = ("1h", "24h", "7d")
CHUNK = 20_000


def _weighted(pairs: tuple[tuple[str, int], ...]) -> list[str]:
    return [name for name, weight in pairs for _ in range(weight)]


def task_rows(count: int, devices: int, accounts: int, days: float, now: datetime, seed: int) -> Iterator[tuple[Any, ...]]:
    """`count` task rows as tuples in COLUMNS order, created uniformly over the last `days` days."""
    rng = random.Random(seed)
    statuses, types = _weighted(STATUSES), _weighted(TYPES)
    span = days * 86_400
    for n in range(count):
        type_ = rng.choice(types)
        status = rng.choice(statuses)
        created = now - timedelta(seconds=rng.random() * span)
        browser = type_ in BROWSER
        platform = rng.choice(PLATFORMS) if browser else None
        started = created + timedelta(seconds=rng.random() * 2) if status not in ("queued", "rejected") else None
        finished = (started + timedelta(seconds=rng.expovariate(1 / (30 if browser else 0.5)))
                    if started is not None and status != "running" else None)
        if status == "rejected":
            finished = created + timedelta(seconds=0.1)
        params = {"platform": platform, "to": "x", "message": "hi"} if browser else {"message": "m"}
        yield (f"t{n:08d}", f"pc-{rng.randrange(devices):04d}", type_, f"acc-{rng.randrange(accounts):05d}" if browser
               else None, json.dumps(params), platform, status, "api", created, finished or started or created,
               started, finished, 1, 1, 0, 5.0, 0)


def _sqlite_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def fill_sqlite(path: Path, rows: Iterator[tuple[Any, ...]], devices: int, now: datetime) -> None:
    """executemany in one transaction, the way SQLAlchemy stores timestamps on SQLite (naive UTC text)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO devices (id, status, groups, created_at) VALUES (?, 'online', '[]', ?)",
                           [(f"pc-{d:04d}", _sqlite_time(now)) for d in range(devices)])
    marks = ", ".join("?" * len(COLUMNS))
    statement = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({marks})"
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(tuple(_sqlite_time(v) if isinstance(v, datetime) else v for v in row))
        if len(batch) >= CHUNK:
            connection.executemany(statement, batch)
            batch.clear()
    connection.executemany(statement, batch)
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


def fill_postgres(url: str, rows: Iterator[tuple[Any, ...]], devices: int, now: datetime) -> None:
    """COPY, then VACUUM ANALYZE (what autovacuum does to a table that grew, here at once)."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        with connection.cursor() as cursor:
            with cursor.copy("COPY devices (id, status, groups, created_at) FROM STDIN") as copy:
                for d in range(devices):
                    copy.write_row((f"pc-{d:04d}", "online", "[]", now))
            with cursor.copy(f"COPY tasks ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        connection.execute("VACUUM ANALYZE tasks")
        connection.execute("VACUUM ANALYZE devices")


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _stats_job(span: stats.Window, filters: StatsFilters) -> Callable[[Any], Any]:
    return lambda session: stats.compute(session, span, filters)


def measure(url: str, repeat: int, now: datetime) -> list[dict[str, Any]]:
    """Cold and warm timings of each window's statistics and of the /metrics counts."""
    found = []
    jobs: list[tuple[str, Callable[[Any], Any]]] = []
    for window, filters in [*((w, StatsFilters()) for w in WINDOWS), ("24h", StatsFilters(device_id="pc-0007"))]:
        jobs.append((f"stats window={window}" + (", one device" if filters.device_id else ""),
                     _stats_job(stats.resolve_window(window, None, None, now=now), filters)))
    for name, job in jobs:
        engine = create_db_engine(url)  # cold: new connections
        sessions = create_read_sessionmaker(create_sessionmaker(engine))
        with sessions() as session:
            cold = timed(lambda: job(session))
        warm = []
        for _ in range(repeat):
            with sessions() as session:
                warm.append(timed(lambda: job(session)))
        with sessions() as session:
            count = job(session).total
        engine.dispose()
        found.append({"query": name, "rows": count, "cold": cold, "warm": warm})
    engine = create_db_engine(url)
    sessions = create_read_sessionmaker(create_sessionmaker(engine))
    cold = timed(lambda: count_rows(sessions))
    warm = [timed(lambda: count_rows(sessions)) for _ in range(repeat)]
    engine.dispose()
    found.append({"query": "/metrics SQL gauges (all rows)", "rows": -1, "cold": cold, "warm": warm})
    return found


def run_one(database: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc)
    contexts = postgres_database() if database == "postgresql" else None
    url = f"sqlite:///{work / 'stats.db'}"
    if contexts is not None:
        url = contexts.__enter__()
    try:
        engine = create_db_engine(url)
        migrate(engine)
        engine.dispose()
        rows = task_rows(args.rows, args.devices, args.accounts, args.days, now, args.seed)
        started = time.perf_counter()
        if database == "postgresql":
            fill_postgres(url, rows, args.devices, now)
        else:
            fill_sqlite(work / "stats.db", rows, args.devices, now)
        print(f"{database}: {args.rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
        found = measure(url, args.repeat, now)
        for item in found:
            item["database"] = database
            print(f"  {item['query']}: rows {item['rows']:,} cold {item['cold']:.3f} s warm {spread(item['warm'], 3)} s",
                  flush=True)
        return found
    finally:
        if contexts is not None:
            contexts.__exit__(None, None, None)


def report(found: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = [[f["database"], f["query"], "all" if f["rows"] < 0 else f"{f['rows']:,}", f"{f['cold']:.3f}",
             spread(f["warm"], 3)] for f in found]
    text = (f"# Stats query with {args.rows:,} task rows\n\n`.venv/bin/python -m benchmarks.stats_query --rows {args.rows} "
            f"--repeat {args.repeat}`: {args.devices:,} devices, {args.accounts:,} accounts, tasks created uniformly over "
            f"{args.days:g} days. {machine_note()}.\n\n"
            + markdown_table(["database", "query", "tasks in window", "cold s", f"warm s, median (min–max) of {args.repeat}"],
                             rows) + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stats_query.md").write_text(text, encoding="utf-8")
    print(text)
    plt = pyplot()
    if plt is None:
        return
    queries = list(dict.fromkeys(f["query"] for f in found))
    databases = list(dict.fromkeys(f["database"] for f in found))
    figure, axis = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(databases)
    for i, database in enumerate(databases):
        mine = {f["query"]: f for f in found if f["database"] == database}
        medians = [statistics.median(mine[q]["warm"]) for q in queries]
        low = [m - min(mine[q]["warm"]) for m, q in zip(medians, queries)]
        high = [max(mine[q]["warm"]) - m for m, q in zip(medians, queries)]
        positions = [x + i * width for x in range(len(queries))]
        axis.bar(positions, medians, width, yerr=[low, high], capsize=3, label=f"{database} warm")
        axis.scatter(positions, [mine[q]["cold"] for q in queries], marker="x", color="black", zorder=3,
                     label="cold" if i == 0 else None)
    axis.set_xticks([x + width * (len(databases) - 1) / 2 for x in range(len(queries))])
    axis.set_xticklabels([q.replace("stats ", "").replace(", ", ",\n").replace(" (", "\n(") for q in queries], fontsize=8)
    axis.set_ylabel("seconds")
    axis.set_title(f"GET /api/v1/stats and /metrics counts, {args.rows:,} task rows")
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "stats_query.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--days", type=float, default=7.0, help="tasks are created over this many days before now")
    parser.add_argument("--repeat", type=int, default=5, help="warm runs per query")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    args = parser.parse_args()
    found: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stats-bench-") as work:
        for database in args.databases:
            found += run_one(database, args, Path(work))
    report(found, args)


if __name__ == "__main__":
    interruptible(main)
