"""The alert loop: a thread of its own with an asyncio event loop, so webhooks never hold up
ingest, the sweeps or the REST API (docs/architecture.md#alerts).

Every `alert_interval` seconds, while this controller holds the `alerts` lease (one controller
of those sharing a database does this job; another takes over `lease` seconds after it died):
look for new alerts (`detect`), tell the listeners (`hooks`), claim due deliveries up to the free
request slots (`alert_concurrency`), and start each as an asyncio task that POSTs it and records
the outcome. SQL runs in worker threads (`asyncio.to_thread`), requests in the loop; a slow or
hanging webhook only holds one of the slots until `alert_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from config.settings_alerts import AlertRule
from controller import lease
from controller.alerts import hooks, outbox, sender
from controller.alerts.detect import detect

log = logging.getLogger(__name__)

ALERTS = "alerts"  # the lease's name


class AlertRunner:
    """Runs the alert loop in a daemon thread between `start` and `stop`."""

    def __init__(self, settings: FleetSettings, sessions: sessionmaker[Session], holder: str,
                 read_sessions: sessionmaker[Session] | None = None) -> None:
        self._settings = settings
        self.listeners: list[hooks.Listener] = []  # told of each alert raised, after its commit
        self._rules: dict[str, AlertRule] = {rule.name: rule for rule in settings.alert_rules}
        self._sessions = sessions
        self._read_sessions = read_sessions or sessions
        self._holder = holder
        self._lease_seconds = max(settings.sweep_lease, 3 * settings.alert_interval)
        self._inflight: set[asyncio.Task[None]] = set()
        self._held = False
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)

    def start(self) -> None:
        for rule in self._rules.values():
            if rule.secret is None and self._settings.alert_secret is None:
                log.warning("alert rule %s sends unsigned webhooks: set its secret or FLEET_ALERT_SECRET", rule.name)
        log.info("alert rules: %s", ", ".join(f"{r.name} ({r.kind})" for r in self._rules.values()))
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(timeout=10)
        if self._held:
            try:
                with self._sessions() as session:
                    lease.release(session, ALERTS, self._holder)
            except Exception as exc:
                log.warning("could not give up the alerts lease; it expires by itself: %s", exc)

    @property
    def holds_lease(self) -> bool:
        return self._held

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        limits = httpx.Limits(max_connections=self._settings.alert_concurrency)
        async with httpx.AsyncClient(timeout=self._settings.alert_timeout, follow_redirects=False,
                                     limits=limits, trust_env=False) as client:
            while not self._stopping.is_set():
                try:
                    for claimed in await asyncio.to_thread(self._pass):
                        task = asyncio.create_task(self._deliver(client, claimed))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
                except Exception:
                    log.exception("alert pass failed; retrying in %.1f s", self._settings.alert_interval)
                try:
                    await asyncio.wait_for(self._wake.wait(), self._settings.alert_interval)
                except asyncio.TimeoutError:
                    pass
            for task in list(self._inflight):
                task.cancel()

    def _pass(self) -> list[outbox.Claimed]:
        """In a worker thread: renew the lease; if held, detect and claim due deliveries."""
        settings = self._settings
        with self._sessions() as session, self._read_sessions() as reader:
            won = lease.take(session, ALERTS, self._holder, self._lease_seconds)
            if won != self._held:
                log.info("this controller (%s) %s the alert webhooks", self._holder, "sends" if won else "no longer sends")
            self._held = won
            if not won:
                return []
            now = lease.database_now(session)
            for event in detect(session, list(self._rules.values()), now, reader):
                log.info("alert %s (%s, rule %s): %s", event.id, event.kind, event.rule, event.summary)
                hooks.publish(self.listeners, event)
            free = settings.alert_concurrency - len(self._inflight)
            return outbox.claim_due(session, now, free, settings.alert_timeout + outbox.CLAIM_MARGIN)

    async def _deliver(self, client: httpx.AsyncClient, claimed: outbox.Claimed) -> None:
        rule = self._rules.get(claimed.rule)
        if rule is None:
            await asyncio.to_thread(self._give_up, claimed.id, f"alert rule {claimed.rule!r} is no longer configured")
            return
        secret = rule.secret or self._settings.alert_secret
        result = await sender.send(client, rule, secret, claimed.id, claimed.kind, claimed.payload,
                                   self._settings.alert_timeout)
        state = await asyncio.to_thread(self._record, claimed, rule, result)
        if state == "failed":
            log.warning("alert %s (rule %s) given up after %d attempt(s): %s", claimed.id, rule.name,
                        claimed.attempts, result.error)
        elif not result.delivered:
            log.info("alert %s (rule %s) attempt %d failed: %s", claimed.id, rule.name, claimed.attempts, result.error)
        else:
            log.info("alert %s (rule %s) delivered on attempt %d", claimed.id, rule.name, claimed.attempts)

    def _record(self, claimed: outbox.Claimed, rule: AlertRule, result: outbox.Outcome) -> str:
        settings = self._settings
        with self._sessions() as session:
            return outbox.record_outcome(
                session, claimed.id, result, lease.database_now(session),
                max_attempts=rule.max_attempts or settings.alert_max_attempts,
                base=settings.alert_backoff, cap=settings.alert_backoff_max)

    def _give_up(self, delivery_id: str, why: str) -> None:
        with self._sessions() as session:
            outbox.give_up(session, delivery_id, why)
