"""Log set-up shared by every fleet process: plain timestamped lines on stderr."""

from __future__ import annotations

import logging
import sys

# Libraries that log every connection or request at INFO; quiet unless debugging.
_NOISY = ("amqtt", "transitions", "uvicorn.access", "alembic", "httpx")


def configure_logging(level: str) -> None:
    """Configure the root logger once; later calls only change the level."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
