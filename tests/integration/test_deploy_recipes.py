"""deploy/ with the real nats-server: every node file of the 3-node cluster is a configuration
nats-server accepts (`nats-server -t`: parsed and checked, nothing started, so the machine's own
NATS on 4222 is no obstacle); the three files, with only their addresses moved to free ports,
run as a cluster that enforces the fleet's logins and ACLs across nodes; and
deploy/reload-on-change.sh reloads a running nats-server when the controllers rewrite its
authorization file. (The compose file itself needs a Docker engine, which this machine lacks;
tests/unit/test_deploy_recipes.py checks its structure.)"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from broker.credentials import Identity, bcrypt_hash, hash_password, write_atomically
from broker.nats_auth import nats_authorization
from tests.harness import Process, wait_for
from tests.integration.broker_conformance.mqtt_kit import RawClient
from tests.nats_broker import single_node_conf
from tests.nats_cluster import nats_binary
from tests.ports import free_port

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NODES = ("nats-1", "nats-2", "nats-3")


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([nats_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("node", NODES)
def test_each_cluster_node_file_is_a_valid_nats_server_config(node: str, tmp_path: Path) -> None:
    """With the authorization file it includes in place (as the controllers write it), the node
    file passes `nats-server -t`; without it, it does not (the check is real)."""
    conf = tmp_path / "nats.conf"
    shutil.copy(DEPLOY / "nats" / f"{node}.conf", conf)
    missing = check(conf)
    assert missing.returncode != 0 and "auth/nats-auth.conf" in missing.stdout + missing.stderr
    identities = [Identity("controller-1", "controller", "", nats_password_hash=bcrypt_hash("secret-1")),
                  Identity("pc-1", "device", "", ["lab"], nats_password_hash=bcrypt_hash("secret-2"))]
    write_atomically(tmp_path / "auth" / "nats-auth.conf", nats_authorization(identities)[0])
    checked = check(conf)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "is valid" in checked.stdout + checked.stderr


def local_node(node: str, work: Path, ports: dict[str, dict[str, int]]) -> Path:
    """deploy/nats/<node>.conf with its listeners, routes and store moved to this machine's free
    ports and `work`; everything else as shipped."""
    text = (DEPLOY / "nats" / f"{node}.conf").read_text()
    own = ports[node]
    text = text.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{own['client']}")
    text = text.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{own['http']}")
    text = text.replace("listen: 0.0.0.0:1883", f"listen: 127.0.0.1:{own['mqtt']}")
    text = text.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{own['route']}")
    text = text.replace('store_dir: "/data/jetstream"', f'store_dir: "{(work / node).as_posix()}"')
    text = re.sub(r"nats-route://(nats-\d):6222", lambda m: f"nats-route://127.0.0.1:{ports[m.group(1)]['route']}", text)
    assert "0.0.0.0" not in text and "/data/" not in text, text
    conf = work / f"{node}.conf"
    conf.write_text(text)
    return conf


def test_the_cluster_recipe_runs_with_the_fleets_acls(tmp_path: Path) -> None:
    """Three nodes from deploy/nats/ (MQTT streams on three replicas): a device on one node gets
    the tasks the controller publishes on another, at QoS 1, and sends its results back; it
    cannot read another device's tasks; an unknown login is refused on every node."""
    secrets = {"controller-1": "secret-controller", "pc-1": "secret-pc-1", "pc-2": "secret-pc-2"}
    identities = [Identity("controller-1", "controller", "", nats_password_hash=bcrypt_hash(secrets["controller-1"])),
                  Identity("pc-1", "device", "", nats_password_hash=bcrypt_hash(secrets["pc-1"])),
                  Identity("pc-2", "device", "", nats_password_hash=bcrypt_hash(secrets["pc-2"]))]
    write_atomically(tmp_path / "auth" / "nats-auth.conf", nats_authorization(identities)[0])
    ports = {node: {name: free_port() for name in ("client", "http", "mqtt", "route")} for node in NODES}
    nodes = [Process(node, [nats_binary(), "-c", str(local_node(node, tmp_path, ports))], tmp_path) for node in NODES]
    try:
        for node in nodes:
            node.start()

        def subscribed(node: str, user: str, topic: str) -> RawClient | None:
            """A QoS 1 subscription works only once JetStream's meta leader and the MQTT streams are up."""
            try:
                client = RawClient(ports[node]["mqtt"], f"{user}-{node}", login=(user, secrets[user]))
                if client.subscribe((topic, 1)) == [1]:
                    return client
                client.drop()
            except (OSError, AssertionError, TimeoutError):
                pass
            return None

        device = wait_for(lambda: subscribed("nats-2", "pc-1", "devices/pc-1/tasks"), 60, 0.5, "pc-1 subscribed on nats-2")
        controller = wait_for(lambda: subscribed("nats-1", "controller-1", "devices/+/results"), 60, 0.5,
                              "the controller subscribed on nats-1")
        other = wait_for(lambda: subscribed("nats-3", "pc-2", "devices/pc-2/tasks"), 60, 0.5, "pc-2 subscribed on nats-3")
        assert other.subscribe(("devices/pc-1/tasks", 1)) == [0x80]
        controller.publish("devices/pc-1/tasks", b"across the cluster")
        controller.publish("devices/pc-2/tasks", b"sentinel")
        message = device.next_message(20)
        assert (message.topic, message.payload, message.qos) == ("devices/pc-1/tasks", b"across the cluster", 1)
        assert other.next_message(20).payload == b"sentinel"
        device.publish("devices/pc-1/results", b"done")
        assert controller.next_message(20).payload == b"done"
        for node in NODES:
            assert _code(ports[node]["mqtt"], "nobody", "guess") in (4, 5), f"{node} admitted an unknown login"
        for client in (device, controller, other):
            client.disconnect()
    finally:
        for node in nodes:
            node.stop()


def test_reload_on_change_applies_a_new_authorization_file(tmp_path: Path) -> None:
    """The wrapper compose runs each broker under: a login provisioned after the start is
    admitted once the file changes, without a restart; SIGTERM stops broker and wrapper."""
    auth_file, mqtt_port = tmp_path / "auth" / "nats-auth.conf", free_port()
    write_atomically(auth_file, nats_authorization([])[0])
    conf = tmp_path / "nats.conf"
    conf.write_text(single_node_conf(tmp_path, free_port(), mqtt_port, auth_file, tmp_path / "nats.pid"))
    wrapper = Process("reload-on-change", ["sh", str(DEPLOY / "reload-on-change.sh"), str(auth_file),
                                           nats_binary(), "-c", str(conf)], tmp_path)
    wrapper.env = {"PATH": "/usr/bin:/bin", "RELOAD_POLL_SECONDS": "0.2"}
    try:
        wrapper.start()
        wait_for(lambda: _code(mqtt_port, "pc-1", "secret") in (4, 5), 20, 0.1, "nats-server refusing an unknown login")
        device = Identity("pc-1", "device", hash_password("secret"), nats_password_hash=bcrypt_hash("secret"))
        write_atomically(auth_file, nats_authorization([device])[0])
        wait_for(lambda: _code(mqtt_port, "pc-1", "secret") == 0, 20, 0.1, "the new login admitted after the reload")
        assert "reloading (SIGHUP" in wrapper.output()
        assert wrapper.popen is not None
        wrapper.popen.send_signal(signal.SIGTERM)
        assert wrapper.popen.wait(20) is not None
        assert _code(mqtt_port, "pc-1", "secret") == -1, "nats-server outlived its wrapper"
    finally:  # never leave the broker behind, even when the wrapper is what failed
        if wrapper.popen is not None:
            for child in _children(wrapper.popen.pid):
                child.kill()
        wrapper.kill()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _code(port: int, user: str, password: str) -> int:
    """The CONNACK return code for this login, or -1 when nothing listens."""
    client = RawClient.__new__(RawClient)
    try:
        code, _present = client.try_connect(port, f"probe-{free_port()}", login=(user, password))
    except (OSError, AssertionError, TimeoutError):
        return -1
    client.drop()
    return code
