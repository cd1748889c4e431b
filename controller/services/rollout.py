"""The arithmetic of a job's rollout and abort rules: pure functions of numbers and times, no SQL,
so they are unit-tested on their own (tests/unit/test_job_rollout.py) and the rollout pass
(`controller.services.job_engine`) only stores what they answer.

Rates use the generic cell rate algorithm (GCRA, the leaky bucket as a meter): `next_at` is the
earliest time the next run may be created; each run created moves it `60 / rate` seconds on.
A pass that comes late does not earn a burst: credit older than `slack` seconds is dropped, so
runs stay at least `60 / rate` apart when the pass interval is shorter than that, and a pass
creates several runs only when the rate is faster than the passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.jobs import AbortRule, BatchRollout, ExponentialRollout, RateRollout

FAILED = ("failed", "rejected")
TIMED_OUT = ("timed_out",)
ENDED = ("succeeded", "failed", "rejected", "timed_out", "canceled", "expired")
RAN = ("succeeded", "failed", "rejected", "timed_out", "expired")  # what abort rules count: not canceled runs


@dataclass(frozen=True)
class Step:
    """What the rollout allows now: `count` runs, and the new `next_at` (None: no limit, or a
    batch that waits for its runs to end before its pause starts)."""

    count: int
    next_at: datetime | None


def exponential_rate(created: int, start: float, factor: float, ceiling: float) -> float:
    """The rate (runs per minute) once `created` runs exist: `start` for the first `start` runs,
    then `start * factor` for the next that many, and so on, never above `ceiling`."""
    rate, level_end = start, start
    while created >= level_end and rate < ceiling:
        rate = min(rate * factor, ceiling)
        level_end += rate
    return rate


def metered(next_at: datetime | None, now: datetime, per_minute: float, wanted: int, slack: float) -> Step:
    """GCRA: how many of `wanted` runs may be created at `now` at `per_minute`, and the next
    slot. `slack`: seconds of unused credit kept (the pass interval, for rates faster than it)."""
    interval = 60.0 / per_minute
    start = now if next_at is None else max(next_at, now - timedelta(seconds=slack))
    if wanted <= 0 or start > now:
        return Step(0, next_at)
    count = min(wanted, int(((now - start).total_seconds() + 1e-6) // interval) + 1)  # 1 µs: float noise
    return Step(count, start + timedelta(seconds=count * interval))


def exponential_step(rollout: ExponentialRollout, created: int, next_at: datetime | None, now: datetime,
                     wanted: int, slack: float) -> Step:
    """`metered` run by run, the rate following `exponential_rate` as runs are created."""
    total = 0
    current = next_at
    while total < wanted:
        rate = exponential_rate(created + total, rollout.start_per_minute, rollout.factor, rollout.max_per_minute)
        step = metered(current, now, rate, 1, slack)
        if step.count == 0:
            break
        total, current = total + 1, step.next_at
    return Step(total, current)


def batch_step(rollout: BatchRollout, next_at: datetime | None, now: datetime, wanted: int,
               unfinished: int, created: int) -> Step:
    """The next batch when its time came. With `wait`, the pause starts once the previous batch's
    runs all ended: `next_at` None while they run, then set to that moment plus the pause."""
    if wanted <= 0:
        return Step(0, next_at)
    if next_at is None and rollout.wait and created > 0:
        if unfinished:
            return Step(0, None)
        return Step(0, now + timedelta(seconds=rollout.pause))  # the pause starts now
    if next_at is not None and next_at > now:
        return Step(0, next_at)
    count = min(wanted, rollout.size)
    return Step(count, None if rollout.wait else now + timedelta(seconds=rollout.pause))


def step(rollout: RateRollout | ExponentialRollout | BatchRollout | None, *, created: int, next_at: datetime | None,
         now: datetime, wanted: int, unfinished: int, slack: float) -> Step:
    """How many of `wanted` pending runs the rollout lets the pass create at `now`."""
    if rollout is None:
        return Step(max(wanted, 0), None)
    if isinstance(rollout, RateRollout):
        return metered(next_at, now, rollout.per_minute, wanted, slack)
    if isinstance(rollout, ExponentialRollout):
        return exponential_step(rollout, created, next_at, now, wanted, slack)
    return batch_step(rollout, next_at, now, wanted, unfinished, created)


def slack_for(rollout: Any, pass_interval: float) -> float:
    """Credit a rate keeps between passes: none when a run is due less often than passes come
    (runs stay evenly spaced), else one pass interval (several runs per pass)."""
    rate = getattr(rollout, "per_minute", None) or getattr(rollout, "max_per_minute", None)
    if rate is None:
        return 0.0
    return pass_interval if 60.0 / rate < pass_interval else 0.0


def counted(rule: AbortRule, by_status: Mapping[str, int]) -> int:
    statuses = {"failed": FAILED, "timed_out": TIMED_OUT, "failed_or_timed_out": FAILED + TIMED_OUT}[rule.on]
    return sum(by_status.get(status, 0) for status in statuses)


def abort_reason(rules: list[AbortRule], by_status: Mapping[str, int]) -> str | None:
    """Why the job must stop (the first rule that holds), or None. `by_status` counts ended runs
    (a run waiting for its retry does not count yet); canceled runs say nothing about the
    rollout's health and are left out."""
    ended = sum(by_status.get(status, 0) for status in RAN)
    for rule in rules:
        if ended < rule.min_runs:
            continue
        bad = counted(rule, by_status)
        what = rule.on.replace("_", " ")
        if rule.count is not None and bad >= rule.count:
            return f"{bad} of {ended} ended runs {what} (abort rule: {rule.count} or more after {rule.min_runs} runs)"
        if rule.percent is not None and bad * 100.0 >= rule.percent * ended:
            share = 100.0 * bad / ended
            return (f"{bad} of {ended} ended runs {what} ({share:.0f} %; abort rule: {rule.percent:g} % or more "
                    f"after {rule.min_runs} runs)")
    return None


def final_status(by_status: Mapping[str, int]) -> str:
    """A finished job's status: succeeded when every run succeeded, failed when none did,
    completed otherwise (and for a job with no run)."""
    runs = sum(by_status.values())
    succeeded = by_status.get("succeeded", 0)
    if runs and succeeded == runs:
        return "succeeded"
    if runs and succeeded == 0:
        return "failed"
    return "completed"


def success_rate(by_status: Mapping[str, int]) -> float | None:
    ended = sum(by_status.get(status, 0) for status in ENDED)
    return None if ended == 0 else by_status.get("succeeded", 0) / ended
