"""One-time secrets in URLs are blanked in log records; account names and token lifetimes are
checked with a message saying what is allowed."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from pydantic import ValidationError

from config.logging import configure_logging, redact
from schemas.api import AccountCreate, TokenCreate, parse_duration


def test_redact_blanks_secret_parameters_only() -> None:
    line = 'GET /_phone/scan?token=abc123&account=alice /x?expires=5&signature=ff00 password=hunter2'
    assert redact(line) == ('GET /_phone/scan?token=<redacted>&account=alice /x?expires=5&signature=<redacted> '
                            'password=<redacted>')


def test_log_records_are_redacted_whoever_logs_them(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("INFO")
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info('%s - "%s %s"', "127.0.0.1", "GET", "/scan?token=s3cret&x=1")
    assert "s3cret" not in caplog.text and "token=<redacted>&x=1" in caplog.text


@pytest.mark.parametrize("name", ["team/alice", "/", ".", "..", "a\nb", "x\x7f"])
def test_unreachable_account_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="except '/'"):
        AccountCreate(name=name, platform="reference", device_id="pc-01")


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("30", "0d", "30 days", "1y", "-1d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    with pytest.raises(ValidationError):
        TokenCreate(name="x", scope="read", expires="30 days")
