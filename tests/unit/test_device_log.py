"""The device daemon's rotating log file: where it is (FLEET_LOG_FILE, default in the data dir,
"off" for none), that it rotates at FLEET_LOG_MAX_BYTES keeping FLEET_LOG_BACKUPS files, and
that secrets are blanked in it as on stderr."""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import SettingsError, load_settings
from config.logging import add_log_file


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, with the handlers a test adds closed and removed afterwards."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    root.setLevel(logging.INFO)
    yield root
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_the_log_file_is_in_the_data_dir_unless_set_or_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.resolved_log_file(settings.data_dir) == tmp_path / "logs" / "device.log"
    assert (settings.log_max_bytes, settings.log_backups) == (5 * 1024 * 1024, 5)
    monkeypatch.setenv("FLEET_LOG_FILE", "OFF")
    assert load_settings(data_dir=tmp_path).resolved_log_file(tmp_path) is None
    monkeypatch.setenv("FLEET_LOG_FILE", str(tmp_path / "elsewhere.log"))
    assert load_settings(data_dir=tmp_path).resolved_log_file(tmp_path) == tmp_path / "elsewhere.log"
    monkeypatch.setenv("FLEET_LOG_BACKUPS", "0")
    with pytest.raises(SettingsError, match="FLEET_LOG_BACKUPS"):
        load_settings()


def test_the_log_file_rotates_and_is_redacted(tmp_path: Path, root_logger: logging.Logger) -> None:
    path = tmp_path / "logs" / "device.log"
    assert add_log_file(path, max_bytes=10 * 1024, backups=2) == path
    assert add_log_file(path, max_bytes=10 * 1024, backups=2) == path  # once per file
    assert sum(isinstance(h, logging.handlers.RotatingFileHandler) for h in root_logger.handlers) == 1
    log = logging.getLogger("device.test")
    for number in range(400):
        log.info("line %d fetching http://c/files/1?expires=9&signature=%s", number, "deadbeef" * 4)
    for handler in root_logger.handlers:
        handler.flush()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["device.log", "device.log.1", "device.log.2"]  # two backups kept, the oldest dropped
    assert all(p.stat().st_size <= 10 * 1024 for p in path.parent.iterdir())
    text = "".join(p.read_text() for p in path.parent.iterdir())
    assert "line 399 " in path.read_text() and "signature=<redacted>" in text and "deadbeef" not in text


def test_an_unwritable_log_file_is_a_warning_not_a_stop(tmp_path: Path, root_logger: logging.Logger,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "logs").write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING):
        assert add_log_file(tmp_path / "logs" / "device.log", 10 * 1024, 2) is None
    assert "logging to stderr only" in caplog.text
