"""Log set-up shared by every fleet process: plain timestamped lines on stderr, with one-time
secrets carried in URLs (the QR login `token`, a file link's `signature`, …) blanked out of
every record, whichever library logs it (e.g. uvicorn's access lines at DEBUG)."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

# Libraries that log every connection or request at INFO; quiet unless debugging.
_NOISY = ("amqtt", "transitions", "uvicorn.access", "alembic", "httpx")
# `name=value` in a query string or form whose value is a credential.
_SECRET_PARAM = re.compile(r"(?i)\b(token|signature|password|secret|access_token)=[^&\s\"'<>]+")
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """`text` with the values of secret URL parameters replaced by <redacted>."""
    return _SECRET_PARAM.sub(rf"\1={REDACTED}", text)


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def _install_redaction() -> None:
    """Wrap the log record factory once, so every record of this process is redacted as it is
    made (a filter on one logger or handler would miss libraries with their own handlers)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "fleet_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return record

    factory.fleet_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure_logging(level: str) -> None:
    """Configure the root logger once; later calls only change the level."""
    _install_redaction()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
