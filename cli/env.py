"""`fleet env`: where the running `fleet up` of the data dir listens, as shell variables, so
recipes work for whatever ports are in use: `eval "$(fleet env)"` sets API, MQTT_HOST,
MQTT_PORT and DEVICE."""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit

from cli.local import read_runtime, settings
from cli.output import fail


def env() -> None:
    """Print the running `fleet up`'s API URL, broker and local device as shell variables
    (use: eval "$(fleet env)")."""
    config = settings()
    runtime = read_runtime(config.data_dir)
    if runtime is None:
        fail(f"no `fleet up` is running with the data dir {config.data_dir}; start one, or set "
             "FLEET_DATA_DIR to the data dir it runs with", code=1)
    values = {"API": runtime.api_url}
    if runtime.mqtt_url:
        broker = urlsplit(runtime.mqtt_url)
        values |= {"MQTT_HOST": broker.hostname or "", "MQTT_PORT": str(broker.port or "")}
    if runtime.device_id:
        values["DEVICE"] = runtime.device_id
    if runtime.site_url:
        values["SITE"] = runtime.site_url
    for name, value in values.items():
        print(f"{name}={shlex.quote(value)}")
