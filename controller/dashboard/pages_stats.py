"""The overview's success-rate panel: over the last hour and the last day, for the whole fleet,
per platform and per device, from the statistics service (`controller.services.stats`, counted
in SQL). `overview_extra_stats.html` puts the panel on `/`; htmx fetches `/overview/stats`
when the page loads and again every few seconds, so it follows the fleet without a reload.

The figures are kept for `CACHE_SECONDS`: many open overview pages cost the database one set
of GROUP BYs per period, not one per page per poll. Strings live in locales/*/stats.po.
"""

from __future__ import annotations

import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from controller.api.deps import ReadSessionDep
from controller.dashboard.render import render
from controller.dashboard.session import Viewer
from controller.services import stats
from controller.services.stats import SuccessRates
from schemas.stats import GroupStats

router = APIRouter(include_in_schema=False)

WINDOWS = ("1h", "24h")
CACHE_SECONDS = 2.0
TOP_DEVICES = 20  # busiest devices shown; the rest are counted in the fleet figure

_lock = threading.Lock()
_cache: dict[int, tuple[float, dict[str, SuccessRates]]] = {}  # per app (id of its sessionmaker)


def _rates(request: Request, session: Session) -> dict[str, SuccessRates]:
    key = id(request.app.state.read_sessions)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        found = {window: stats.success_rates(session, stats.resolve_window(window, None, None)) for window in WINDOWS}
        _cache[key] = (time.monotonic(), found)
        return found


@router.get("/overview/stats", response_class=HTMLResponse)
def overview_stats(request: Request, _token: Viewer, session: ReadSessionDep) -> HTMLResponse:
    """The panel's content, polled by the overview page."""
    rates = _rates(request, session)
    tables = {name: _rows(rates, name) for name in ("per_platform", "per_device")}
    return render(request, "_overview_stats.html", {"rates": rates, "windows": WINDOWS, "tables": tables})


def _rows(rates: dict[str, SuccessRates], name: str) -> list[tuple[GroupStats | None, GroupStats]]:
    """(last hour, last day) per key of the day's groups, busiest first, at most TOP_DEVICES."""
    hour = {group.key: group for group in getattr(rates["1h"], name)}
    return [(hour.get(group.key), group) for group in getattr(rates["24h"], name)[:TOP_DEVICES]]
