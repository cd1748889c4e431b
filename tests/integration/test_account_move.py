"""A login survives the loss of its PC: `alice` logs in on device A with the real QR flow, A backs
her session up (sealed with the operator's vault key), A dies (SIGKILL), she is moved to device
B through REST and B restores the backup (taken by itself after the login, and again on request): a cookie-check login succeeds there with no new QR
login at the site. The controller's copy holds no cookie in the clear and opens with no other
key or account. When A is repaired, moving her back takes a fresh backup on B first. One broker
kind (amqtt) is enough: every browser start costs seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.vault import VaultError, VaultKeyMismatch, decrypt, generate_key, write_key_file
from schemas.vault import fingerprint
from tests.browser_kit import CHROMIUM, Site, qr_login, start_browser_device, start_site
from tests.harness import Broker, Controller, Device, Process, base_env, fleet_argv, missing_service, wait_for

pytestmark = pytest.mark.integration

SESSION_COOKIE = "session"  # the reference site's (device/platforms/reference/site/app.py)


@pytest.fixture
def site(tmp_path: Path, _processes: list[Process]) -> Iterator[Site]:
    site = start_site(tmp_path, _processes)
    with site.api:
        yield site


@pytest.mark.parametrize("broker", ["amqtt"], indirect=True)
def test_a_login_survives_the_loss_of_its_pc(broker: Broker, site: Site, tmp_path: Path, _processes: list[Process]) -> None:
    controller = Controller(broker, tmp_path, keepalive="5", session_backup_after_login="true")
    _processes.append(controller.process)
    controller.start()
    key = generate_key()
    key_file = tmp_path / "operator" / "vault.key"
    write_key_file(key_file, key)
    own = {"public_api_url": f"http://127.0.0.1:{controller.port}", "vault_key_file": str(key_file)}
    pc_a = start_browser_device(broker, tmp_path, _processes, site, "pc-a", **own)
    start_browser_device(broker, tmp_path, _processes, site, "pc-b", **own)
    for device_id in ("pc-a", "pc-b"):
        controller.wait_device(device_id, "online")
    for account in ("alice", "carol"):
        made = controller.api.post("/api/v1/accounts", json={"name": account, "platform": "reference", "device_id": "pc-a"})
        assert made.status_code == 201, made.text
    none_yet = controller.api.get("/api/v1/accounts/alice/backup")
    assert none_yet.status_code == 404 and "no session backup" in none_yet.json()["detail"]

    qr_login(controller, site, "alice")
    meta, backup_task = backups_after_login(controller, key)

    pc_a.kill()  # the PC died
    controller.wait_device("pc-a", "offline")
    moved = controller.api.post("/api/v1/accounts/alice/move", json={"device_id": "pc-b"})
    assert moved.status_code == 200, moved.text
    answer = moved.json()
    assert (answer["fresh_backup"], answer["backup"]["file_id"]) == ("offline", meta["file_id"]), answer
    restore = controller.wait_task(answer["restore_task_id"], timeout=60)
    assert restore["status"] == "succeeded" and restore["device_id"] == "pc-b", restore
    assert restore["result"]["logged_in"] is True
    account = controller.api.get("/api/v1/accounts/alice").json()
    assert (account["device_id"], account["login_status"]) == ("pc-b", "logged_in")

    check = controller.create_task(None, "login", account="alice", params={"platform": "reference", "method": "cookie_check"})
    checked = controller.wait_task(check["id"], timeout=60)
    assert checked["device_id"] == "pc-b" and checked["result"] == {"logged_in": True, "method": "cookie_check"}, checked
    assert [(r["account"], r["method"]) for r in site.records()["logins"]] == [("alice", "qr")]  # no new QR login

    assert_sealed(controller, key, meta, backup_task["id"])

    move_back_to_repaired_pc(controller, site, pc_a)
    cli_move_without_backup(controller, tmp_path)


def backups_after_login(controller: Controller, key: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The backup the controller asks for after alice's login, then one on request replacing it:
    the latest backup's metadata and its task."""
    # The controller asks for a backup after the login by itself (FLEET_SESSION_BACKUP_AFTER_LOGIN).
    first = wait_for(lambda: (r := controller.api.get("/api/v1/accounts/alice/backup")).status_code == 200 and r.json(),
                     60, 0.2, "the backup after alice's login")
    assert (first["device_id"], first["key_fingerprint"]) == ("pc-a", fingerprint(key))
    taken = controller.api.post("/api/v1/accounts/alice/backup")  # and on request; it replaces the first
    assert taken.status_code == 201, taken.text
    backup_task = controller.wait_task(taken.json()["id"], timeout=60)
    assert backup_task["status"] == "succeeded", backup_task
    assert backup_task["result"]["key_fingerprint"] == fingerprint(key) and backup_task["result"]["cookies"] >= 1
    meta = controller.api.get("/api/v1/accounts/alice/backup").json()
    assert (meta["device_id"], meta["key_fingerprint"], meta["task_id"]) == ("pc-a", fingerprint(key), backup_task["id"])
    assert not (controller.data_dir / "files" / first["file_id"]).exists()  # only the latest is kept
    return meta, backup_task


def assert_sealed(controller: Controller, key: bytes, meta: dict[str, Any], backup_task_id: str) -> None:
    # What the controller keeps: ciphertext only. The operator's key opens it; no other key, and
    # not as another account.
    blob = (controller.data_dir / "files" / meta["file_id"]).read_bytes()
    assert len(blob) == meta["size"]
    state = json.loads(decrypt(key, blob, platform="reference", account="alice"))
    [cookie] = [c["value"] for c in state["cookies"] if c["name"] == SESSION_COOKIE]
    assert len(cookie) >= 16 and cookie.encode() not in blob
    with pytest.raises(VaultKeyMismatch, match=fingerprint(key)):
        decrypt(generate_key(), blob, platform="reference", account="alice")
    with pytest.raises(VaultError, match="another account"):
        decrypt(key, blob, platform="reference", account="bob")
    unsigned = controller.api.put(f"/api/v1/backups/{backup_task_id}", params={"expires": 2**31, "signature": "0" * 64},
                                  content=b"x" * 64)
    assert unsigned.status_code == 403, unsigned.text


def move_back_to_repaired_pc(controller: Controller, site: Site, pc_a: Device) -> None:
    # PC A is repaired and comes back: moving alice there takes a fresh backup on B (online) first.
    pc_a.start()
    controller.wait_device("pc-a", "online")
    back = controller.api.post("/api/v1/accounts/alice/move", json={"device_id": "pc-a", "backup_wait": 60}).json()
    assert back["fresh_backup"] == "taken" and back["backup"]["device_id"] == "pc-b", back
    assert back["backup"]["task_id"] == back["fresh_backup_task_id"]
    home = controller.wait_task(back["restore_task_id"], timeout=60)
    assert (home["status"], home["device_id"], home["result"]["logged_in"]) == ("succeeded", "pc-a", True), home
    assert site.records()["logins"] == [site.records()["logins"][0]]  # still the one QR login


def cli_move_without_backup(controller: Controller, tmp_path: Path) -> None:
    # The CLI path, for an account without a backup: it moves, and says it needs a login.
    env = base_env(api_url=f"http://127.0.0.1:{controller.port}", api_token=controller.admin_token)
    cli = subprocess.run(fleet_argv("account", "move", "carol", "--to", "pc-b", "--wait", "0"), env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "no session backup" in cli.stdout and "needs a login" in cli.stdout
    carol = controller.api.get("/api/v1/accounts/carol").json()
    assert (carol["device_id"], carol["login_status"]) == ("pc-b", "unknown")

def test_local_storage_is_restored_into_the_origin(site: Site) -> None:
    """`session_restore` writes each origin's localStorage while the origin is answered locally;
    the items are then there when the real site is opened."""
    from playwright.async_api import async_playwright

    from device.browser.session import CHROMIUM_ARGS
    from device.handlers.session_vault import write_local_storage

    if not CHROMIUM.exists():
        missing_service("chromium is not installed (Debian: apt-get install chromium)")

    async def restore_then_read() -> str | None:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await write_local_storage(page, {"origin": site.url, "localStorage": [{"name": "token", "value": "t-123"}]})
                await page.goto(site.url + "/login")  # the real site now
                value: str | None = await page.evaluate("localStorage.getItem('token')")
                return value
            finally:
                await browser.close()

    assert asyncio.run(restore_then_read()) == "t-123"
