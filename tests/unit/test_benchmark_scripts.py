"""The side-by-side benchmark scripts import with the test extra alone and parse their options
(they are run by hand, not in CI: their figures are not timed tests), and the statistics they
report are the ones their tables name."""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest

from benchmarks.common import percentile, setting, spread


@pytest.mark.parametrize("module", ["benchmarks.latency", "benchmarks.throughput"])
def test_script_prints_its_help(module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = importlib.import_module(module)
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exited:
        script.main()
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--repeat" in out and "--set KEY=VALUE" in out
    assert f"python -m {module}" in out  # the command to run is at the top of the help


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 501)]  # 1 … 500, shuffled order must not matter
    shuffled = values[250:] + values[:250]
    assert percentile(shuffled, 50) == 250
    assert percentile(shuffled, 99) == 495
    assert percentile(shuffled, 100) == 500
    assert percentile([7.0], 99) == 7.0


def test_spread_gives_median_and_range() -> None:
    assert spread([3.0, 1.0, 2.0]) == "2.0 (1.0–3.0)"
    assert spread([4.25], 2) == "4.25"
    assert spread([]) == "–"


def test_setting_needs_key_and_value() -> None:
    assert setting("Device_Message_Rate=1000") == ("device_message_rate", "1000")
    with pytest.raises(argparse.ArgumentTypeError):
        setting("no-equals-sign")
