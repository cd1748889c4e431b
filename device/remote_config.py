"""The device's side of fleet config (docs/architecture.md#groups-and-fleet-config): applies each
`DesiredConfig` arriving on its retained `devices/<id>/config` topic, live, and reports what it
applied on `devices/<id>/config/reported`.

Settings come from the explicit allow-list `schemas.config_sync.REMOTE_SETTINGS`, narrowed by
this PC's FLEET_REMOTE_CONFIG_ALLOW; anything else is reported as rejected with its reason. A
setting no longer desired goes back to the PC's own value. The groups the config names are the
group task topics the device subscribes to (and only those: what the PC declares in FLEET_GROUPS
is a declaration, membership is the controller's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from config import FleetSettings
from device.link import MqttLink
from device.presence import Presence
from schemas.common import utcnow
from schemas.config_sync import DesiredConfig, ReportedConfig, decide
from schemas.topics import device_config_reported, group_tasks

log = logging.getLogger(__name__)

Appliers = dict[str, Callable[[Any], None]]


class RemoteConfig:
    """Call `on_message` (event loop thread) with each message on the config topic."""

    def __init__(self, settings: FleetSettings, device_id: str, link: MqttLink, presence: Presence,
                 appliers: Appliers, loop: asyncio.AbstractEventLoop) -> None:
        """`appliers`: setting name → a function making a value take effect now."""
        self._settings, self._device_id, self._link, self._presence = settings, device_id, link, presence
        self._appliers, self._loop = appliers, loop
        self._local: dict[str, Any] = {name: getattr(settings, name) for name in appliers}
        self._in_force: dict[str, Any] = dict(self._local)
        self._revision = 0
        self._applied: dict[str, Any] = {}
        self._rejected: dict[str, str] = {}
        self.group_topics: frozenset[str] = frozenset()

    def on_message(self, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained config: keep what is in force
        try:
            desired = DesiredConfig.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("ignored an invalid desired config: %s", exc.errors()[0].get("msg", "invalid"))
            return
        if desired.device_id != self._device_id or desired.revision <= self._revision:
            return  # another device's, or one already applied (sent again on reconnect)
        accepted, self._rejected = decide(desired.settings, self._settings.remote_config_allow)
        for name, applier in self._appliers.items():
            value = accepted.get(name, self._local[name])
            if value != self._in_force[name]:
                applier(value)
                self._in_force[name] = value
        self._presence.facts = self._presence.facts.model_copy(update={
            name: value for name, value in self._in_force.items() if name in type(self._presence.facts).model_fields})
        self._applied, self._revision = accepted, desired.revision
        self.group_topics = frozenset(group_tasks(group) for group in desired.groups)
        log.info("config revision %d applied: %s%s", desired.revision,
                 ", ".join(f"{k}={v}" for k, v in sorted(accepted.items())) or "no settings",
                 f"; rejected {', '.join(sorted(self._rejected))}" if self._rejected else "")
        self._link.set_group_topics(sorted(self.group_topics), self._answered)

    def _answered(self, granted: list[str], refused: list[str]) -> None:
        """The broker answered the group subscriptions (paho's thread): report from the loop."""
        try:
            self._loop.call_soon_threadsafe(self._report, granted, refused)
        except RuntimeError:
            pass  # the loop is closed: shutting down

    def _report(self, granted: list[str], refused: list[str]) -> None:
        rejected = dict(self._rejected)
        if refused:
            rejected["groups"] = f"the broker refused the subscription to {', '.join(refused)} (its ACL)"
        report = ReportedConfig(
            device_id=self._device_id, revision=self._revision, applied=self._applied, rejected=rejected, at=utcnow(),
            groups=sorted(topic.split("/")[2] for topic in granted),
        )
        self._link.publish(device_config_reported(self._device_id), report.model_dump_json().encode())
