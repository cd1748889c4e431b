"""The `fleet` command in process: `--version`, readable help, the runtime file a CLI finds
`fleet up` by, and database errors worded with their fix."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cli import main as cli_main
from cli.local import Runtime, api_url, read_runtime, remove_runtime, write_runtime
from config.settings import load_settings
from controller.db import DatabaseSetupError, open_database
from tests.cli_runner import fleet_command

ROOT = Path(__file__).resolve().parents[2]


def _all_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _all_paths(sub, (*prefix, name))
    return paths


def test_version_prints_the_package_version(fleet: Any) -> None:
    code, output = fleet("--version")
    assert code == 0 and output.strip() == f"fleet (mqtt-fleet) {cli_main.package_version()}"
    assert cli_main.package_version() != "unknown"


def test_help_of_every_command_shows_no_type_labels(fleet: Any) -> None:
    paths = _all_paths(fleet_command())
    assert ("task", "send") in paths and ("up",) in paths and len(paths) > 20
    for path in paths:
        code, output = fleet(*path, "--help")
        assert code == 0 and "Usage: fleet" in output, (path, output)
        assert "<bool>" not in output and "<list[" not in output and "<int" not in output, (path, output)


def test_task_send_help_lists_each_task_types_parameters(fleet: Any) -> None:
    _code, output = fleet("task", "send", "--help")
    assert "sleep: seconds=1.0; steps=10: progress events to send" in output
    assert "chat: platform (required); to (required); message (required)" in output
    assert "upload: platform (required); video_url (required)" in output


def test_runtime_file_points_the_cli_at_a_running_fleet_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    config = load_settings(data_dir=tmp_path)
    assert api_url(config) == "http://127.0.0.1:8080"
    write_runtime(tmp_path, Runtime("http://127.0.0.1:9123", "mqtt://127.0.0.1:9124", "pc", None, os.getpid()))
    assert api_url(config) == "http://127.0.0.1:9123"
    assert api_url(load_settings(data_dir=tmp_path, api_url="http://elsewhere:1")) == "http://elsewhere:1"
    remove_runtime(tmp_path)
    assert read_runtime(tmp_path) is None and api_url(config) == "http://127.0.0.1:8080"


def test_runtime_file_of_a_dead_fleet_up_is_ignored(tmp_path: Path) -> None:
    import psutil

    dead = max(psutil.pids()) + 100_000
    write_runtime(tmp_path, Runtime("http://127.0.0.1:9123", None, None, None, dead))
    assert read_runtime(tmp_path) is None and read_runtime(tmp_path, alive_only=False) is not None
    (tmp_path / "runtime.json").write_text("{not json")
    assert read_runtime(tmp_path) is None


@pytest.mark.parametrize("url, expected", [
    ("not-a-url", "FLEET_DATABASE_URL is not a SQLAlchemy database URL"),
    ("postgresql+pg8000://u:hunter2@127.0.0.1/db", "install it with pip install pg8000"),
])
def test_unusable_database_url_is_one_line_with_the_fix(url: str, expected: str) -> None:
    with pytest.raises(DatabaseSetupError) as raised:
        open_database(url)
    message = str(raised.value)
    assert expected in message and "\n" not in message and "hunter2" not in message


def test_missing_psycopg_names_the_postgres_extra() -> None:
    from controller.db import _describe_failure

    missing = ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
    message = _describe_failure("postgresql+psycopg://u:secret@db/fleet", missing)
    assert "pip install -e '.[postgres]'" in message and "FLEET_DATABASE_URL" in message and "secret" not in message


def test_database_of_a_newer_release_is_one_line_saying_to_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'controller.db'}"
    open_database(url).dispose()
    with sqlite3.connect(tmp_path / "controller.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseSetupError) as refused:
        open_database(url)
    message = str(refused.value)
    assert "newer mqtt-fleet" in message and "9999" in message and "FLEET_DATABASE_URL" in message
    assert "\n" not in message


def test_a_bad_idempotency_key_is_refused_before_sending(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_API_URL", "http://127.0.0.1:9")  # never reached: the key is checked first
    with pytest.raises(SystemExit) as ended:
        fleet_command().main(args=["task", "send", "pc-01", "ping", "--idempotency-key", "two words"], prog_name="fleet")
    assert ended.value.code == 2 and "--idempotency-key 'two words' is not a key" in capsys.readouterr().err
