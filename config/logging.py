"""Log set-up shared by every fleet process: plain timestamped lines on stderr, with one-time
secrets carried in URLs (the QR login `token`, a file link's `signature`, …) blanked out of
every record, whichever library logs it (e.g. uvicorn's access lines at DEBUG). The device
daemon also writes the same lines to a rotating file (`add_log_file`); the redaction happens
when a record is made, so it holds for every handler."""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path
from typing import Any

# Libraries that log every connection or request at INFO; quiet unless debugging.
_NOISY = ("amqtt", "transitions", "uvicorn.access", "alembic", "httpx")
# `name=value` in a query string or form whose value is a credential.
_SECRET_PARAM = re.compile(r"(?i)\b(token|signature|password|secret|access_token)=[^&\s\"'<>]+")
REDACTED = "<redacted>"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        if record.args and isinstance(record.msg, str) and _SECRET_PARAM.search(record.msg):
            # Format first: a template such as "signature=%s" would lose its %s to the redaction (other
            # records keep their args: uvicorn's access formatter reads them).
            try:
                record.msg, record.args = redact(record.getMessage()), None
                return record
            except Exception:  # a record whose arguments do not fit: redact the parts, as it fails later anyway
                pass
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
    if not root.handlers and sys.stderr is not None:  # None: pythonw.exe (a Windows task), no console
        logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


def add_log_file(path: Path, max_bytes: int, backups: int) -> Path | None:
    """Also log to `path`, rotated at `max_bytes` with `backups` old files kept (once per file;
    one process writes it, which is what RotatingFileHandler's rename needs on Windows too).
    A file that cannot be opened is a warning on stderr, not a stopped daemon: None."""
    _install_redaction()
    root = logging.getLogger()
    target = path.resolve()
    for handler in root.handlers:
        if isinstance(handler, logging.handlers.RotatingFileHandler) and Path(handler.baseFilename) == target:
            return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(target, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the log file %s (%s): logging to stderr only",
                                            target, exc.strerror or type(exc).__name__)
        return None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return target
