"""Listeners told of every alert this controller raises (e.g. the dashboard's live event bus).

Each `AlertRunner` keeps its own list (`runner.listeners`), which the app's wiring appends to
(`controller/app.py` hands alerts to the live bus as `alert` events). Each is called in the alert loop's worker thread, after the alert's row is committed, with its
`AlertEvent`; it must only hand the event on (enqueue), never block. An error in one is logged
and does not stop the others or the alert's delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from schemas.alerts import AlertEvent
from schemas.live import AlertNotice

log = logging.getLogger(__name__)

Listener = Callable[[AlertEvent], None]


def to_live(event: AlertEvent) -> AlertNotice:
    """The push stream's shape of an alert (`schemas/live.py`)."""
    data = event.data
    return AlertNotice(rule=event.kind, message=event.summary, device_id=data.get("device_id"),
                       task_id=data.get("task_id"), account=data.get("account"))


def publish(listeners: Sequence[Listener], event: AlertEvent) -> None:
    """Hand `event` to every listener."""
    for listener in list(listeners):
        try:
            listener(event)
        except Exception:
            log.exception("an alert listener failed on alert %s (%s)", event.id, event.kind)
