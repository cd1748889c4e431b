"""The arithmetic of job rollouts and abort rules (`controller.services.rollout`): pure functions,
checked against the schedules they must produce."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from controller.services import rollout
from schemas.jobs import AbortRule, BatchRollout, ExponentialRollout, RateRollout

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def simulate(plan: object, targets: int, pass_interval: float, until: float, unfinished: int = 0) -> list[float]:
    """Creation times (seconds) of `targets` runs when passes come every `pass_interval` seconds."""
    created: list[float] = []
    next_at = None
    slack = rollout.slack_for(plan, pass_interval)
    t = 0.0
    while t <= until and len(created) < targets:
        step = rollout.step(plan, created=len(created), next_at=next_at, now=at(t),  # type: ignore[arg-type]
                            wanted=targets - len(created), unfinished=unfinished, slack=slack)
        created += [t] * step.count
        next_at = step.next_at
        t = round(t + pass_interval, 6)
    return created


def test_a_rate_of_60_per_minute_spaces_runs_a_second_apart_even_with_quarter_second_passes() -> None:
    times = simulate(RateRollout(per_minute=60), 6, 0.25, 30)
    assert times == [0, 1, 2, 3, 4, 5]


def test_late_passes_never_earn_a_burst_at_a_slow_rate() -> None:
    times = simulate(RateRollout(per_minute=60), 5, 0.7, 30)  # passes at 0, .7, 1.4, 2.1, …
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps), times
    assert times[-1] >= 4.0


def test_a_rate_faster_than_the_passes_creates_several_per_pass_at_the_rate() -> None:
    times = simulate(RateRollout(per_minute=600), 100, 1.0, 60)  # 10 per second
    per_pass = {t: times.count(t) for t in sorted(set(times))}
    assert per_pass[0.0] == 1 and all(count == 10 for t, count in per_pass.items() if 0 < t < max(per_pass))
    assert times[-1] == pytest.approx(10.0, abs=1.0)


def test_no_rollout_creates_everything_at_once() -> None:
    assert simulate(None, 50, 1.0, 5) == [0.0] * 50


def test_exponential_rate_grows_by_its_factor_each_minute_worth_up_to_its_ceiling() -> None:
    assert [rollout.exponential_rate(n, 6, 2, 20) for n in (0, 5, 6, 17, 18, 37, 38, 1000)] == [6, 6, 12, 12, 20, 20, 20, 20]
    times = simulate(ExponentialRollout(start_per_minute=60, factor=2, max_per_minute=240), 60 + 120 + 40, 0.25, 200)
    assert times[59] == pytest.approx(59.0)  # a minute at 60/min
    assert times[60 + 119] - times[60] == pytest.approx(59.5, abs=0.5)  # then 120/min for 120 runs
    assert times[-1] - times[180] == pytest.approx(39 * 0.25, abs=0.3)  # then the 240/min ceiling


def test_batches_with_a_pause_and_with_waiting_for_the_batch_to_end() -> None:
    plan = BatchRollout(size=3, pause=10)
    assert simulate(plan, 8, 1.0, 60) == [0, 0, 0, 10, 10, 10, 20, 20]
    waiting = BatchRollout(size=2, pause=5, wait=True)
    first = rollout.step(waiting, created=0, next_at=None, now=at(0), wanted=6, unfinished=0, slack=0)
    assert (first.count, first.next_at) == (2, None)
    running = rollout.step(waiting, created=2, next_at=None, now=at(30), wanted=4, unfinished=1, slack=0)
    assert (running.count, running.next_at) == (0, None)  # the batch still runs: the pause has not started
    ended = rollout.step(waiting, created=2, next_at=None, now=at(40), wanted=4, unfinished=0, slack=0)
    assert (ended.count, ended.next_at) == (0, at(45))
    early = rollout.step(waiting, created=2, next_at=at(45), now=at(44), wanted=4, unfinished=0, slack=0)
    second = rollout.step(waiting, created=2, next_at=at(45), now=at(45), wanted=4, unfinished=0, slack=0)
    assert early.count == 0 and (second.count, second.next_at) == (2, None)


def test_abort_rules_by_count_percent_and_minimum_runs() -> None:
    by_count = AbortRule(on="failed", count=2, min_runs=1)
    assert rollout.abort_reason([by_count], {"failed": 1, "succeeded": 5}) is None
    reason = rollout.abort_reason([by_count], {"failed": 1, "rejected": 1, "succeeded": 5})
    assert reason is not None and reason.startswith("2 of 7 ended runs failed")
    percent = AbortRule(on="failed_or_timed_out", percent=20, min_runs=5)
    assert rollout.abort_reason([percent], {"timed_out": 2, "succeeded": 2}) is None  # 4 ended < 5
    assert rollout.abort_reason([percent], {"timed_out": 1, "succeeded": 4}) is not None  # 20 % of 5
    assert rollout.abort_reason([percent], {"timed_out": 1, "succeeded": 5}) is None  # 16.7 %
    timed_out = AbortRule(on="timed_out", count=1)
    assert rollout.abort_reason([timed_out], {"failed": 9}) is None
    assert rollout.abort_reason([by_count, timed_out], {"timed_out": 1}) is not None
    assert rollout.abort_reason([percent], {"timed_out": 1, "succeeded": 4, "canceled": 20}) is not None  # not counted
    with pytest.raises(ValueError, match="threshold"):
        AbortRule(on="failed")


def test_final_status_and_success_rate() -> None:
    assert rollout.final_status({"succeeded": 3}) == "succeeded"
    assert rollout.final_status({"failed": 2, "timed_out": 1}) == "failed"
    assert rollout.final_status({"failed": 1, "succeeded": 1}) == "completed"
    assert rollout.final_status({}) == "completed"
    assert rollout.success_rate({}) is None and rollout.success_rate({"succeeded": 3, "failed": 1}) == 0.75
