"""`fleet job create`'s options turned into a job body: rates, thresholds and rollouts, and the
errors a wrong one gets (no controller needed: they are refused before any request)."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from cli import jobs as cli_jobs


def test_rates_thresholds_and_rollouts() -> None:
    assert [cli_jobs.parse_rate(text) for text in ("60/min", "1/s", "600/h", "90", "2.5 / sec")] == [60, 60, 10, 90, 150]
    assert cli_jobs.parse_threshold("20%", "--abort-failed") == {"percent": 20.0}
    assert cli_jobs.parse_threshold("3", "--abort-failed") == {"count": 3}
    assert cli_jobs._rollout(None, 10, 30, True, None) == {"kind": "batches", "size": 10, "pause": 30, "wait": True}
    assert cli_jobs._rollout("120/min", None, 0, False, "6,2") == {
        "kind": "exponential", "start_per_minute": 6.0, "factor": 2.0, "max_per_minute": 120.0}
    assert cli_jobs._rollout(None, None, 0, False, None) is None
    for bad in ("fast", "0/min", "-5", "3/fortnight"):
        with pytest.raises(typer.BadParameter, match="--rate"):
            cli_jobs.parse_rate(bad)
    for bad in ("0", "150%", "lots"):
        with pytest.raises(typer.BadParameter, match="--abort-failed"):
            cli_jobs.parse_threshold(bad, "--abort-failed")
    with pytest.raises(typer.BadParameter, match="START,FACTOR"):
        cli_jobs._rollout(None, None, 0, False, "6")
    with pytest.raises(typer.BadParameter, match="one rollout"):
        cli_jobs._rollout("60/min", 5, 0, False, None)


def test_a_wrong_option_is_refused_with_what_to_give(fleet: Any) -> None:
    code, _output = fleet("job", "create", "echo", "--all", "--rate", "fast")
    assert code == 2
    code, _output = fleet("job", "create", "echo")
    assert code == 2
