"""The device daemon: wires identity, journal, MQTT link, intake and executor together, routes
incoming messages, and shuts down gracefully (retained `offline` status with reason shutdown).

`run_device(settings)` is the blocking entry point for the CLI; `DeviceDaemon.run` the async one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from config import FleetSettings
from config.logging import add_log_file, configure_logging
from device.executor import Executor
from device.facts import build_facts
from device.handlers.base import BrowserEnvironment
from device.handlers.registry import HandlerRegistry, load_registry
from device.identity import resolve_device_id
from device.intake import INVALID_TYPE, CancelRequest, InputRequest, Rejection, read_task
from device.journal import Journal, RunRef, journal_path
from device.link import MqttLink
from device.metrics import MetricsReader
from device.platforms.registry import load_platforms
from device.presence import Presence
from device.remote_config import RemoteConfig
from device.reporter import Reporter, task_error
from device.update import UpdateHandler, Updates
from device.url_policy import UrlPolicy
from schemas.common import new_id, utcnow
from schemas.errors import WireErrorCode
from schemas.events import TaskSummary
from schemas.signing import trusted_keys
from schemas.status import DeviceFacts, DeviceStatus, Heartbeat, boot_id
from schemas.topics import (
    BROADCAST_TASKS,
    device_config,
    device_heartbeat,
    device_results,
    device_status,
    device_tasks,
)

log = logging.getLogger(__name__)


class DeviceDaemon:
    """One device: connects, keeps presence, runs tasks until stopped."""

    def __init__(self, settings: FleetSettings, registry: HandlerRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else load_registry()
        self.device_id = resolve_device_id(settings)
        self.status_topic = device_status(self.device_id)
        # Group task topics come from the controller's desired config (`remote_config`), not
        # from FLEET_GROUPS: that is only declared in the birth.
        self.task_topics = frozenset([device_tasks(self.device_id), BROADCAST_TASKS])
        self.config_topic = device_config(self.device_id)
        self._heartbeat_interval = settings.heartbeat_interval
        self._interval_changed = asyncio.Event()
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()
        self._twins_reported: set[str] = set()
        # Public keys only (settings validated them): a device can check a signature, never make one.
        self._trusted_keys = trusted_keys(settings.task_signing_public_keys)
        self._updates = Updates(settings)  # the `update` task (docs/architecture.md#remote-update)
        self.registry.register(UpdateHandler(self._updates), replace=True)

    @property
    def exit_code(self) -> int:
        """0, or `device.update_store.UPDATE_EXIT` when it stopped to run a new version."""
        return self._updates.exit_code

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set or this coroutine is cancelled; then stop running tasks
        (reported interrupted), publish the retained offline status and disconnect."""
        stop = stop if stop is not None else asyncio.Event()
        settings = self.settings
        facts = build_facts(settings, self.registry.types())
        presence = Presence(self.device_id, facts, settings.data_dir / f"announced-session-{self.device_id}.txt")
        journal = Journal(journal_path(settings.data_dir, self.device_id))
        link = MqttLink(
            settings,
            self.device_id,
            presence,
            subscriptions=[*sorted(self.task_topics), self.status_topic],
            on_message=self._route,
            loop=asyncio.get_running_loop(),
        )
        self._wire(facts, presence, journal, link, stop)
        log.info("device %s starting (journal %s)", self.device_id, journal.path)
        if self._trusted_keys:
            log.info("running signed tasks only, from key(s) %s", ", ".join(sorted(self._trusted_keys)))
        heartbeats: asyncio.Task[None] | None = None
        try:
            self._updates.report_previous()
            interrupted = self._executor.fail_interrupted(skip=self._updates.handed_over())
            if interrupted:
                log.info("%d task(s) interrupted by the previous run reported as failed", interrupted)
            link.start()
            self._spawn(self._updates.confirm())
            self._spawn(self._updates.watch_launcher())
            heartbeats = asyncio.create_task(self._send_heartbeats(), name="heartbeats")
            await stop.wait()
        finally:
            log.info("device %s stopping", self.device_id)
            self._stopping = True
            if heartbeats is not None:
                heartbeats.cancel()
            try:
                await self._executor.shutdown()
                await link.close()
            finally:
                journal.close()

    def _wire(self, facts: DeviceFacts, presence: Presence, journal: Journal, link: MqttLink, stop: asyncio.Event) -> None:
        """The parts that act on messages: reporter, executor, updates and remote config."""
        settings = self.settings
        results_topic = device_results(self.device_id)
        self._presence = presence
        self._link = link
        self._reporter = Reporter(
            journal, self.device_id, lambda: presence.session_id, lambda payload: link.publish(results_topic, payload)
        )
        self._executor = Executor(
            journal=journal,
            reporter=self._reporter,
            device_id=self.device_id,
            data_dir=settings.data_dir,
            facts=facts,
            max_concurrency=settings.max_concurrency,
            registry=self.registry,
            browser=functools.cache(lambda: browser_environment(settings)),
        )
        self._journal = journal
        self._updates.attach(self._executor, self._reporter, lambda: link.born, stop.set)
        self._config = RemoteConfig(settings, self.device_id, link, presence, {
            "heartbeat_interval": self._set_heartbeat_interval,
            "max_concurrency": lambda limit: self._spawn(self._executor.set_concurrency(limit)),
            "log_level": lambda level: logging.getLogger().setLevel(level),
        }, asyncio.get_running_loop())

    def _set_heartbeat_interval(self, seconds: int) -> None:
        self._heartbeat_interval = seconds
        self._interval_changed.set()

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_heartbeats(self) -> None:
        """Tell the controller every heartbeat interval that this device is alive, and how loaded
        its PC is (QoS 0: a lost heartbeat is replaced by the next one). An interval set remotely
        takes effect at once: the wait starts again with it."""
        topic = device_heartbeat(self.device_id)
        metrics = MetricsReader(self.settings.data_dir)
        while True:
            self._interval_changed.clear()
            try:
                await asyncio.wait_for(self._interval_changed.wait(), self._heartbeat_interval)
                continue  # a new interval: wait it from now
            except asyncio.TimeoutError:
                pass
            if self._link.born:  # never while deaf: heartbeats alone make the controller take a session for born
                beat = Heartbeat(
                    device_id=self.device_id, session_id=self._presence.session_id, at=utcnow(),
                    running=self._executor.active, metrics=metrics.read(),
                )
                self._link.publish(topic, beat.model_dump_json().encode(), qos=0)

    # --- incoming messages (event loop thread) ----------------------------------------------

    def _route(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            if topic in self.task_topics or topic in self._config.group_topics:
                self._on_task(topic, payload, retained)
            elif topic == self.config_topic:
                self._config.on_message(payload)
            elif topic == self.status_topic:
                self._on_status(payload, retained)
            else:
                log.debug("ignored a message on %s: not a subscribed topic", topic)
        except Exception as exc:  # one bad message must never stop the daemon
            log.error("handling a message on %s failed: %s", topic, type(exc).__name__)
            log.debug("message handling traceback", exc_info=True)
            if topic in self.task_topics or topic in self._config.group_topics:
                self._reject_unreadable(topic, exc)

    def _reject_unreadable(self, topic: str, exc: Exception) -> None:
        """The last word on a task message that broke its own handling: a `rejected` event under
        a fresh id, so the sender hears that the device could not read it."""
        message = f"the device could not read this task message ({type(exc).__name__}); see its log"
        try:
            run = RunRef(new_id())
            summary = TaskSummary(type=INVALID_TYPE, source_topic=topic)
            self._reporter.reject(run, task_error(WireErrorCode.INVALID_TASK, message), summary)
        except Exception as again:
            log.error("could not report the unreadable message on %s either: %s", topic, type(again).__name__)

    def _on_task(self, topic: str, payload: bytes, retained: bool) -> None:
        if self._stopping:
            log.debug("ignored a task message on %s: shutting down", topic)
            return
        if not payload:
            log.debug("ignored an empty message on %s (a retained message being cleared)", topic)
            return
        outcome = read_task(
            topic,
            payload,
            device_id=self.device_id,
            registry=self.registry,
            max_payload_bytes=self.settings.max_payload_bytes,
            trusted_keys=self._trusted_keys,
            remember_nonce=self._journal.remember_nonce,
            retained=retained,
        )
        if isinstance(outcome, Rejection):
            self._reporter.reject(outcome.run, task_error(outcome.code, outcome.message), outcome.summary)
            log.info("task %s (%s) rejected: %s", outcome.task_id, outcome.summary.type, outcome.code)
        elif isinstance(outcome, CancelRequest):
            self._executor.cancel(outcome.target_id, outcome.attempt)
        elif isinstance(outcome, InputRequest):
            self._executor.provide_input(outcome.target_id, outcome.name, outcome.value)
        else:
            self._executor.submit(outcome)

    def _on_status(self, payload: bytes, retained: bool) -> None:
        """Answer a stale will with a new birth. A message with the retain flag was sent because
        of our subscription, so it predates our birth, which already replaced it; if it is
        another daemon's, the link watches for that daemon taking the id back (`conflicts`).
        (MQTT 3.1.1 clears the flag on messages forwarded live [MQTT-3.3.1-9]; amqtt does too.)"""
        try:
            status = DeviceStatus.model_validate_json(payload)
        except ValidationError:
            log.debug("ignored an invalid message on %s", self.status_topic)
            return
        if status.device_id != self.device_id:
            return
        if retained:
            if boot_id(status.session_id) != self._presence.boot_id:
                host = f" on {status.facts.hostname}" if status.facts else ""
                self._link.other_daemon_seen(
                    f"another daemon{host} (boot {boot_id(status.session_id)})", still_online=status.state == "online"
                )
            return
        if status.state == "online" and boot_id(status.session_id) != self._presence.boot_id:
            self._report_twin(status)
            return
        if self._presence.claim_rebirth(status):
            log.info("stale offline status of session %s seen: birth republished", status.session_id)
            self._link.republish_birth()

    def _report_twin(self, status: DeviceStatus) -> None:
        """Another daemon's birth arrived while we are connected: the broker let two clients
        with our id in at once (amqtt does; Mosquitto drops the older one instead)."""
        other = boot_id(status.session_id)
        if other in self._twins_reported:
            return
        self._twins_reported.add(other)
        host = f" on {status.facts.hostname}" if status.facts else ""
        log.error(
            "device id %s is also used by another daemon%s (boot %s), connected at the same time as this one. "
            "Give each PC its own FLEET_DEVICE_ID (or delete the copied device_id file in its data directory).",
            self.device_id, host, other,
        )


def browser_environment(settings: FleetSettings) -> BrowserEnvironment:
    """How browser tasks run on this device, from the settings. Called once, when the first
    task asks for it, so the browser modules are imported only then."""
    from device.browser.locate import find_browser
    from device.browser.session import BrowserOptions
    from device.handlers.browser import running_as_root

    no_sandbox = running_as_root() if settings.browser_no_sandbox is None else settings.browser_no_sandbox
    return BrowserEnvironment(
        options=BrowserOptions(find_browser(settings.browser_path), settings.browser_headless, no_sandbox),
        platform_urls=dict(settings.platform_urls),
        locator_dir=settings.locator_dir,
        artifacts_dir=settings.data_dir / "artifacts",
        platforms=load_platforms(),
        media_policy=UrlPolicy(settings.public_base_url, tuple(settings.upload_allowed_hosts), settings.api_ca_file),
        vault_key_file=settings.vault_key_file,
    )


def run_device(settings: FleetSettings) -> int:
    """Run the daemon in the foreground until Ctrl-C / SIGTERM (Ctrl-Break on Windows); the exit
    status: 0, or `UPDATE_EXIT` when it stopped for its launcher to start a new version."""
    configure_logging(settings.log_level)
    log_file = settings.resolved_log_file(settings.data_dir)
    if log_file is not None and add_log_file(log_file, settings.log_max_bytes, settings.log_backups):
        log.info("logging to %s too (rotated at %d bytes, %d kept)", log_file, settings.log_max_bytes, settings.log_backups)
    daemon = DeviceDaemon(settings)
    try:
        asyncio.run(_serve(daemon))
    except KeyboardInterrupt:  # Ctrl-C where the loop has no signal handlers (Windows)
        pass
    return daemon.exit_code


async def _serve(daemon: DeviceDaemon) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for name in ("SIGINT", "SIGTERM"):
        try:
            loop.add_signal_handler(getattr(signal, name), stop.set)
        except (NotImplementedError, AttributeError, RuntimeError, ValueError):
            pass  # Windows: asyncio.run turns Ctrl-C into cancelling this task, also a graceful stop
    if hasattr(signal, "SIGBREAK"):  # Windows console Ctrl-Break / close

        def on_break(_signum: int, _frame: Any) -> None:
            loop.call_soon_threadsafe(stop.set)

        signal.signal(signal.SIGBREAK, on_break)
    await daemon.run(stop)
