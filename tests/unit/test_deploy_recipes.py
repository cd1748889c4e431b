"""The deployment recipe of deploy/ holds together (no Docker engine runs here, so this is what
can be checked without one): the services are there with healthchecks, both controllers get the
same shared settings and their own login and client id, every FLEET_* variable is a real
setting, the broker files the controllers write are the ones the brokers read, nginx's upstreams
are the controllers, the NATS nodes route to each other, and deploy's Mosquitto config is the
fleet's own (broker/mosquitto.py)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from broker.mosquitto import mosquitto_conf
from config.settings import FleetSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONTROLLERS = ("controller-1", "controller-2")
NATS_NODES = ("nats-1", "nats-2", "nats-3")
SHARED = ("FLEET_DATABASE_URL", "FLEET_ADMIN_TOKEN", "FLEET_FILE_URL_KEY", "FLEET_PUBLIC_API_URL",
          "FLEET_BROKER_PASSWORD_FILE", "FLEET_BROKER_ACL_FILE", "FLEET_NATS_AUTH_FILE", "FLEET_API_PORT",
          "FLEET_FILE_STORE")
OWN = ("FLEET_MQTT_URL", "FLEET_CONTROLLER_CLIENT_ID")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def mount(service: dict[str, Any], volume: str) -> PurePosixPath:
    """Where `service` mounts the named volume or file `volume`."""
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        if source == volume:
            return PurePosixPath(target)
    raise AssertionError(f"{volume} is not mounted")


def test_every_piece_is_there_with_a_healthcheck(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"postgres", "mosquitto", *NATS_NODES, *CONTROLLERS, "proxy"}
    for name, service in services(compose).items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name
    assert services(compose)["mosquitto"]["profiles"] == ["mosquitto"]
    assert all(services(compose)[node]["profiles"] == ["nats"] for node in NATS_NODES)


def test_controllers_share_what_must_match_and_own_what_must_differ(compose: dict[str, Any]) -> None:
    environments = [services(compose)[name]["environment"] for name in CONTROLLERS]
    for key in SHARED:
        values = {env.get(key) for env in environments}
        assert len(values) == 1 and None not in values, f"{key} differs between the controllers: {values}"
    for key in OWN:
        values = {env.get(key) for env in environments}
        assert len(values) == len(CONTROLLERS), f"{key} must differ between the controllers: {values}"
    known = {f"FLEET_{name.upper()}" for name in FleetSettings.model_fields}
    for env in environments:
        unknown = {key for key in env if key not in known}
        assert not unknown, f"not a setting: {unknown}"
    assert "${FLEET_FILE_URL_KEY:?" in environments[0]["FLEET_FILE_URL_KEY"]  # required, never a default
    assert "@postgres:5432/" in environments[0]["FLEET_DATABASE_URL"]
    assert environments[0]["FLEET_FILE_STORE"] == "database"  # a local store serves a file from one controller only


def test_the_brokers_read_the_files_the_controllers_write(compose: dict[str, Any]) -> None:
    env = services(compose)["controller-1"]["environment"]
    for name in CONTROLLERS:
        assert mount(services(compose)[name], "broker-files") == PurePosixPath("/broker-files")
    written = {PurePosixPath(env[key]).name for key in ("FLEET_BROKER_PASSWORD_FILE", "FLEET_BROKER_ACL_FILE")}
    mosquitto = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    auth_dir = mount(services(compose)["mosquitto"], "broker-files")
    read = {PurePosixPath(line.split()[1]) for line in mosquitto.splitlines() if line.startswith(("password_file", "acl_file"))}
    assert read == {auth_dir / name for name in written}
    for node in NATS_NODES:
        service = services(compose)[node]
        conf_path = mount(service, f"./nats/{node}.conf")
        include = re.search(r"^include (\S+)$", (DEPLOY / "nats" / f"{node}.conf").read_text(), re.M)
        assert include is not None, f"{node} includes no authorization file"
        included = conf_path.parent / include.group(1)  # nats-server resolves it next to the config
        assert included == mount(service, "broker-files") / PurePosixPath(env["FLEET_NATS_AUTH_FILE"]).name
        assert str(included) in service["command"], f"{node}'s reload wrapper does not watch {included}"


def test_the_proxy_sends_to_both_controllers(compose: dict[str, Any]) -> None:
    proxy = services(compose)["proxy"]
    conf = (DEPLOY / "nginx" / "fleet.conf").read_text()
    assert mount(proxy, "./nginx/fleet.conf") == PurePosixPath("/etc/nginx/conf.d/default.conf")
    upstream = re.search(r"upstream fleet_controllers \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server (\S+?):(\d+)", upstream.group(1), re.M)
    port = services(compose)["controller-1"]["environment"]["FLEET_API_PORT"]
    assert sorted(servers) == [(name, port) for name in CONTROLLERS]
    assert "proxy_pass http://fleet_controllers;" in conf
    assert sorted(proxy["depends_on"]) == list(CONTROLLERS)


def test_the_nats_nodes_form_one_cluster(compose: dict[str, Any]) -> None:
    routes = []
    for node in NATS_NODES:
        text = (DEPLOY / "nats" / f"{node}.conf").read_text()
        assert re.search(rf"^server_name: {node}$", text, re.M), f"{node}.conf names another server"
        assert "jetstream {" in text and "mqtt {" in text
        routes.append(sorted(re.findall(r"nats-route://(\S+?):6222", text)))
        assert services(compose)[node]["hostname"] == node
    assert routes == [sorted(NATS_NODES)] * len(NATS_NODES)


def test_deploys_mosquitto_conf_is_the_fleets_own() -> None:
    """The tuning of broker/mosquitto.py (queue sizes, nodelay, client id = login) holds in
    deploy too; only addresses and paths are deploy's."""
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    body = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
    assert body == mosquitto_conf(1883, "0.0.0.0", persistence_dir=Path("/mosquitto/data"),
                                  password_file=Path("/mosquitto/auth/passwd"), acl_file=Path("/mosquitto/auth/acl"))
