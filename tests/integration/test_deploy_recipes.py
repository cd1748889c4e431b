"""deploy/ with the real nats-server: every node file of the 3-node cluster is a configuration
nats-server accepts (`nats-server -t`: parsed and checked, nothing started, so the machine's own
NATS on 4222 is no obstacle), and deploy/reload-on-change.sh reloads a running nats-server when
the controllers rewrite its authorization file. (The compose file itself needs a Docker engine,
which this machine lacks; tests/unit/test_deploy_recipes.py checks its structure.)"""

from __future__ import annotations

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
from tests.nats_broker import nats_binary, single_node_conf
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
