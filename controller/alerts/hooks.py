"""Listeners told of every alert this controller raises (e.g. the dashboard's live event bus).

`listeners` is a plain list the wiring code appends to: `hooks.listeners.append(bus.publish)`.
Each is called in the alert loop's worker thread, after the alert's row is committed, with its
`AlertEvent`; it must only hand the event on (enqueue), never block. An error in one is logged
and does not stop the others or the alert's delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from schemas.alerts import AlertEvent

log = logging.getLogger(__name__)

Listener = Callable[[AlertEvent], None]
listeners: list[Listener] = []


def publish(event: AlertEvent) -> None:
    """Hand `event` to every listener."""
    for listener in list(listeners):
        try:
            listener(event)
        except Exception:
            log.exception("an alert listener failed on alert %s (%s)", event.id, event.kind)
