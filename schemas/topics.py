"""The MQTT topic names of the wire contract, and parsing of incoming topics.

| topic                        | publisher             | payload            |
|------------------------------|-----------------------|--------------------|
| devices/<id>/tasks           | controller, operator  | TaskEnvelope       |
| devices/<id>/results         | device                | TaskEvent          |
| devices/<id>/status          | device birth, will    | DeviceStatus       |
| devices/<id>/heartbeat       | device (QoS 0)        | Heartbeat          |
| fleet/broadcast/tasks        | controller, operator  | TaskEnvelope       |
| fleet/groups/<group>/tasks   | controller, operator  | TaskEnvelope       |
| devices/<id>/config          | controller (RETAINED) | DesiredConfig      |
| devices/<id>/config/reported | device                | ReportedConfig     |

The config topic is the one topic a controller publishes retained: a device that was offline
gets its desired config (settings and groups) on its next connection. Task topics never are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from schemas.common import DEVICE_ID_PATTERN, GROUP_PATTERN

BROADCAST_TASKS = "fleet/broadcast/tasks"
ALL_STATUS = "devices/+/status"
ALL_RESULTS = "devices/+/results"
ALL_HEARTBEATS = "devices/+/heartbeat"
ALL_TASKS = "devices/+/tasks"
ALL_CONFIG_REPORTED = "devices/+/config/reported"

_ID = DEVICE_ID_PATTERN.strip("^$")
_GROUP = GROUP_PATTERN.strip("^$")
_DEVICE_TOPIC = re.compile(rf"^devices/({_ID})/(tasks|results|status|heartbeat)$")
_CONFIG_REPORTED_TOPIC = re.compile(rf"^devices/({_ID})/config/reported$")
_GROUP_TOPIC = re.compile(rf"^fleet/groups/({_GROUP})/tasks$")


def device_tasks(device_id: str) -> str:
    return f"devices/{device_id}/tasks"


def device_results(device_id: str) -> str:
    return f"devices/{device_id}/results"


def device_status(device_id: str) -> str:
    return f"devices/{device_id}/status"


def device_heartbeat(device_id: str) -> str:
    return f"devices/{device_id}/heartbeat"


def device_config(device_id: str) -> str:
    """Retained desired config of one device (`schemas.config_sync.DesiredConfig`)."""
    return f"devices/{device_id}/config"


def device_config_reported(device_id: str) -> str:
    return f"devices/{device_id}/config/reported"


def parse_config_reported_topic(topic: str) -> str | None:
    """The device id of `devices/<id>/config/reported`, or None for any other topic."""
    match = _CONFIG_REPORTED_TOPIC.match(topic)
    return match.group(1) if match else None


def group_tasks(group: str) -> str:
    return f"fleet/groups/{group}/tasks"


Channel = Literal["tasks", "results", "status", "heartbeat"]


@dataclass(frozen=True)
class DeviceTopic:
    device_id: str
    channel: Channel


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """`devices/<id>/<channel>` split into its parts, or None for any other topic."""
    match = _DEVICE_TOPIC.match(topic)
    if match is None:
        return None
    return DeviceTopic(device_id=match.group(1), channel=match.group(2))  # type: ignore[arg-type]


def parse_group_topic(topic: str) -> str | None:
    """The group name of `fleet/groups/<group>/tasks`, or None for any other topic."""
    match = _GROUP_TOPIC.match(topic)
    return match.group(1) if match else None


TASK_TOPIC_FILTERS = (ALL_TASKS, BROADCAST_TASKS, "fleet/groups/+/tasks")
"""Every topic that carries tasks. None of them ever carries a retained message: a retained task
would run again on each reconnect of its devices (the broker refuses one, a device ignores one)."""


def is_task_topic(topic: str) -> bool:
    """True for `devices/<anything>/tasks`, `fleet/broadcast/tasks` and `fleet/groups/<anything>/tasks`."""
    levels = topic.split("/")
    if len(levels) == 3:
        return (levels[0] == "devices" and levels[2] == "tasks") or topic == BROADCAST_TASKS
    return len(levels) == 4 and levels[0] == "fleet" and levels[1] == "groups" and levels[3] == "tasks"
