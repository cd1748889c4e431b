"""HTTPS for the REST API (docs/architecture.md#https-for-the-rest-api): a real controller given a
certificate and key serves only HTTPS; the CLI, `fleet watch` and the device's media download
verify it with FLEET_API_CA_FILE, fetch a signed file link over it, and refuse an untrusted
certificate with a line naming that setting; a bad pair stops the controller with one line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.mosquitto import TlsFiles
from device.handlers.base import TaskFailure
from device.transfer import fetch
from device.url_policy import UrlPolicy
from schemas.errors import WireErrorCode
from tests.certificates import make_certificates
from tests.harness import Broker, Controller, Process, base_env, fleet_argv

pytestmark = pytest.mark.integration

CA_SETTING = "FLEET_API_CA_FILE"


class Https:
    def __init__(self, controller: Controller, tls: TlsFiles, work: Path) -> None:
        self.controller, self.tls, self.work = controller, tls, work
        self.url = f"https://127.0.0.1:{controller.port}"

    def fleet(self, *args: str, trust: bool = True) -> subprocess.CompletedProcess[str]:
        extra = {"api_ca_file": str(self.tls.cafile)} if trust else {}
        env = base_env(api_url=self.url, api_token=self.controller.admin_token, data_dir=str(self.work / "cli"), **extra)
        return subprocess.run(fleet_argv(*args), env=env, cwd=self.work, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Https]:
    work = tmp_path_factory.mktemp("api-tls")
    tls = make_certificates(work)
    broker = Broker("amqtt", work)
    controller = Controller(broker, work, api_ca=tls.cafile, api_certfile=str(tls.certfile),
                            api_keyfile=str(tls.keyfile))
    processes: list[Process] = [broker.process, controller.process]
    try:
        broker.start()
        controller.start()  # waits for /healthz over HTTPS, verified with the CA
        yield Https(controller, tls, work)
    finally:
        for process in processes:
            process.kill()


def _download(link: str, cache: Path, ca_file: Path | None, size: int, sha256: str) -> Path:
    async def quiet(_done: int, _total: int | None) -> None:
        return None

    policy = UrlPolicy(link.split("/api/v1/")[0], (), ca_file)
    return asyncio.run(fetch(link, cache, size=size, sha256=sha256, progress=quiet, policy=policy))


def test_the_cli_and_a_device_verify_the_controller_and_fetch_a_signed_link(https: Https) -> None:
    with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer at all
        httpx.get(f"http://127.0.0.1:{https.controller.port}/healthz", timeout=5)
    listed = https.fleet("devices")
    assert listed.returncode == 0 and "0 device(s)" in listed.stdout, listed.stderr

    media = https.work / "clip.mp4"
    media.write_bytes(b"\x00fleet-video" * 50_000)
    uploaded = https.fleet("file", "upload", str(media))
    assert uploaded.returncode == 0, uploaded.stderr
    stored: dict[str, Any] = json.loads(uploaded.stdout[uploaded.stdout.index("{"):])
    assert stored["url"].startswith(f"{https.url}/api/v1/files/") and "signature=" in stored["url"]
    fetched = _download(stored["url"], https.work / "cache", https.tls.cafile, stored["size"], stored["sha256"])
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == stored["sha256"] == hashlib.sha256(media.read_bytes()).hexdigest()

    with pytest.raises(TaskFailure) as refused:
        _download(stored["url"], https.work / "cache-untrusting", None, stored["size"], stored["sha256"])
    assert refused.value.code is WireErrorCode.DOWNLOAD_FAILED
    assert CA_SETTING in str(refused.value) and "not trusted" in str(refused.value)
    assert "signature=" not in str(refused.value), "the link's signature is never in a message"


def test_an_untrusted_certificate_is_refused_with_the_setting_to_fix(https: Https) -> None:
    for args in (("devices",), ("watch", "--count", "1")):
        run = https.fleet(*args, trust=False)
        assert run.returncode == 1, (args, run.stdout, run.stderr)
        assert "not trusted" in run.stderr and CA_SETTING in run.stderr and "Traceback" not in run.stderr, run.stderr
    junk = https.work / "junk.pem"
    junk.write_text("not a certificate\n")
    run = subprocess.run(fleet_argv("devices"), capture_output=True, text=True, timeout=60, cwd=https.work,
                         env=base_env(api_url=https.url, api_ca_file=str(junk), data_dir=str(https.work / "cli")))
    assert run.returncode == 2 and f"{CA_SETTING}={junk}" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_key_of_another_certificate_stops_the_controller_with_one_line(https: Https, tmp_path: Path) -> None:
    wrong_key = https.tls.cafile.parent / "ca.key"  # the CA's key, not the server certificate's
    env = base_env(database_url=f"sqlite:///{tmp_path / 'c.db'}", data_dir=str(tmp_path / "c"), api_port="1",
                   mqtt_url=https.controller.broker.url, api_certfile=str(https.tls.certfile), api_keyfile=str(wrong_key))
    run = subprocess.run(fleet_argv("controller"), env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "cannot serve HTTPS with FLEET_API_CERTFILE=" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "its own private key" in run.stderr
