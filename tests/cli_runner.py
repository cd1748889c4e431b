"""The `fleet` command run in process, as its entry point runs it: the `fleet` fixture of the
unit tier (registered in tests/unit/conftest.py) for tests of CLI options and help."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from cli import main as cli_main
from cli.output import plain_metavars


def fleet_command() -> Any:
    command = typer.main.get_command(cli_main.app)
    plain_metavars(command)
    return command


@pytest.fixture
def fleet(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run `fleet ARGS` in process as the entry point does; returns (exit code, stdout)."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as ended:
            fleet_command().main(args=list(args), prog_name="fleet")
        return ended.value.code or 0, capsys.readouterr().out  # type: ignore[return-value]

    return run
