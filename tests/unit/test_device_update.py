"""Remote update, piece by piece (docs/architecture.md#remote-update): the release signature
(good, changed bytes, wrong key, tampered version or file name), unpacking a wheel (and
refusing one that is not ours, not the promised version, damaged or escaping its directory),
the shared state file, the launcher's decision after its daemon exited, and the `update`
handler's refusals before it downloads anything."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.entry import daemon_options
from config import load_settings
from device.handlers.base import TaskContext, TaskFailure
from device.launcher import after_exit, child_argv
from device.update import Updates
from device.update_store import (
    MANAGED_ENV,
    UPDATE_EXIT,
    Failure,
    PackageError,
    Trial,
    UpdateState,
    load_state,
    save_state,
    unpack_wheel,
)
from schemas.errors import WireErrorCode
from schemas.releases import UpdateParams, release_message, signature_problem, wheel_version
from schemas.signing import public_key_text
from schemas.status import DeviceFacts

NAME = "mqtt_fleet-0.2.0-py3-none-any.whl"
WHEEL_TEXT = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _wheel(path: Path, version: str = "0.2.0", purelib: bool = True, extra: dict[str, str] | None = None) -> Path:
    info = f"mqtt_fleet-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("device/__init__.py", f'"""device {version}"""\n')
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: mqtt-fleet\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", WHEEL_TEXT if purelib else WHEEL_TEXT.replace("true", "false"))
        for name, text in (extra or {}).items():
            wheel.writestr(name, text)
    return path


# ---- the release signature ------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _signed(key: Ed25519PrivateKey, data: bytes = b"wheel bytes") -> tuple[str, str]:
    sha256 = hashlib.sha256(data).hexdigest()
    return sha256, key.sign(release_message("0.2.0", sha256, NAME)).hex()


def test_a_good_signature_holds(key: Ed25519PrivateKey) -> None:
    sha256, signature = _signed(key)
    assert signature_problem(key.public_key(), "0.2.0", sha256, NAME, signature) is None


def test_changed_bytes_break_the_signature(key: Ed25519PrivateKey) -> None:
    _sha256, signature = _signed(key)
    corrupted = hashlib.sha256(b"wheel bytez").hexdigest()
    assert "does not match" in (signature_problem(key.public_key(), "0.2.0", corrupted, NAME, signature) or "")


def test_another_key_is_refused(key: Ed25519PrivateKey) -> None:
    sha256, signature = _signed(Ed25519PrivateKey.generate())
    assert signature_problem(key.public_key(), "0.2.0", sha256, NAME, signature) is not None


@pytest.mark.parametrize("version, name", [("0.2.1", NAME), ("0.2.0", "mqtt_fleet-0.2.0-py3-none-win32.whl")])
def test_a_tampered_version_or_file_name_is_refused(key: Ed25519PrivateKey, version: str, name: str) -> None:
    sha256, signature = _signed(key)
    assert signature_problem(key.public_key(), version, sha256, name, signature) is not None


def test_a_malformed_signature_is_a_sentence_not_a_traceback(key: Ed25519PrivateKey) -> None:
    assert "128 hex" in (signature_problem(key.public_key(), "0.2.0", "0" * 64, NAME, "zz") or "")


def test_wheel_version_reads_the_file_name() -> None:
    assert wheel_version(NAME) == "0.2.0"
    assert wheel_version("mqtt_fleet-0.2.0+local.1-py3-none-any.whl") == "0.2.0+local.1"
    assert wheel_version("mqtt_fleet-0.2.0.tar.gz") is None


# ---- unpacking ------------------------------------------------------------------------------


def test_a_wheel_unpacks_into_its_version_directory(tmp_path: Path) -> None:
    target = unpack_wheel(_wheel(tmp_path / NAME), tmp_path / "versions", "0.2.0")
    assert target == tmp_path / "versions" / "0.2.0"
    assert (target / "device" / "__init__.py").read_text() == '"""device 0.2.0"""\n'
    assert (target / "mqtt_fleet-0.2.0.dist-info" / "METADATA").is_file()
    assert not (tmp_path / "versions" / "0.2.0.part").exists()


def test_unpacking_again_replaces_the_earlier_copy(tmp_path: Path) -> None:
    root = tmp_path / "versions"
    (root / "0.2.0" / "stale").mkdir(parents=True)
    unpack_wheel(_wheel(tmp_path / NAME), root, "0.2.0")
    assert not (root / "0.2.0" / "stale").exists()


@pytest.mark.parametrize("build, expected", [
    (lambda p: _wheel(p, version="0.3.0"), "version 0.3.0, not 0.2.0"),
    (lambda p: _wheel(p, purelib=False), "not pure Python"),
    (lambda p: _wheel(p, extra={"../evil.py": "x"}), "outside its own tree"),
    (lambda p: _wheel(p, extra={"/etc/evil": "x"}), "outside its own tree"),
    (lambda p: p.write_bytes(b"not a zip") and p, "not a zip"),
])
def test_a_bad_package_is_refused_and_leaves_nothing(tmp_path: Path, build: Any, expected: str) -> None:
    path = build(tmp_path / NAME)
    with pytest.raises(PackageError, match=expected):
        unpack_wheel(path, tmp_path / "versions", "0.2.0")
    assert list((tmp_path / "versions").iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_a_wheel_of_another_project_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("other-0.2.0.dist-info/WHEEL", WHEEL_TEXT)
    (tmp_path / NAME).write_bytes(buffer.getvalue())
    with pytest.raises(PackageError, match="not a wheel of mqtt_fleet"):
        unpack_wheel(tmp_path / NAME, tmp_path / "versions", "0.2.0")


# ---- state and the launcher's decision ----------------------------------------------------------

TRIAL = Trial(version="0.3.0", previous="0.2.0", previous_version="0.2.0", task_key="t1")


def test_state_round_trips_and_a_missing_or_broken_file_is_the_default(tmp_path: Path) -> None:
    assert load_state(tmp_path) == UpdateState()
    state = UpdateState(active="0.2.0", trial=TRIAL)
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    (tmp_path / "state.json").write_text("{not json")
    assert load_state(tmp_path) == UpdateState()


def test_a_trial_that_exits_before_it_is_healthy_is_rolled_back() -> None:
    decision = after_exit(UpdateState(active="0.2.0", trial=TRIAL), "0.3.0", 1, "RuntimeError: broken")
    assert decision.restart and decision.state.trial is None and decision.state.active == "0.2.0"
    assert decision.state.failure == Failure(version="0.3.0", previous_version="0.2.0", task_key="t1",
                                             reason="RuntimeError: broken")


def test_a_trial_that_exits_silently_gets_its_status_as_the_reason() -> None:
    decision = after_exit(UpdateState(trial=TRIAL), "0.3.0", -9, "")
    assert decision.state.failure is not None and "status -9" in decision.state.failure.reason


def test_the_update_exit_starts_the_version_on_trial() -> None:
    state = UpdateState(active="0.2.0", trial=TRIAL)
    assert after_exit(state, None, UPDATE_EXIT, "") == after_exit(state, None, UPDATE_EXIT, "x")
    decision = after_exit(state, None, UPDATE_EXIT, "")
    assert decision.restart and decision.state == state


def test_a_confirmed_trial_that_updates_again_is_not_rolled_back() -> None:
    newer = TRIAL.model_copy(update={"version": "0.4.0", "previous": "0.3.0"})
    decision = after_exit(UpdateState(active="0.3.0", trial=newer), "0.3.0", UPDATE_EXIT, "")
    assert decision.restart and decision.state.failure is None and decision.state.trial == newer


@pytest.mark.parametrize("code", [0, 1, -15])
def test_any_other_exit_ends_the_launcher_with_that_status(code: int) -> None:
    decision = after_exit(UpdateState(active="0.2.0"), None, code, "")
    assert not decision.restart and decision.exit_code == code


def test_the_child_runs_this_interpreter_with_the_version_first(tmp_path: Path) -> None:
    argv = child_argv(tmp_path, ["--id", "pc-01"])
    assert argv[1:3] == ["-P", "-c"] and argv[4:] == [str(tmp_path), "device", "--id", "pc-01"]
    assert child_argv(None, [])[4] == ""


def test_fleet_device_managed_runs_the_launcher() -> None:
    assert daemon_options(["device", "--managed", "--id", "pc-01"]) == {"device_id": "pc-01", "name": None, "config": None,
                                                                         "managed": True}
    assert daemon_options(["device"]) == {"device_id": None, "name": None, "config": None}


# ---- the handler's refusals, before any download ------------------------------------------------


def _params(key: Ed25519PrivateKey, **changes: Any) -> UpdateParams:
    sha256, signature = _signed(key)
    fields = {"version": "9.9.9", "url": "http://127.0.0.1:1/api/v1/files/x/download?expires=1&signature=0",
              "file_name": "mqtt_fleet-9.9.9-py3-none-any.whl", "size": 10, "sha256": sha256, "signature": signature}
    return UpdateParams.model_validate({**fields, **changes})


def _refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: UpdateParams, managed: bool = True,
             **settings: Any) -> TaskFailure:
    if managed:
        monkeypatch.setenv(MANAGED_ENV, "1")
    else:
        monkeypatch.delenv(MANAGED_ENV, raising=False)
    updates = Updates(load_settings(data_dir=tmp_path, **settings))

    async def nothing(*_args: Any) -> None:
        return None

    facts = DeviceFacts(name="pc", version="0.1.0", hostname="pc", os="x", python="3", keepalive=30)
    ctx = TaskContext(task_id="t1", device_id="pc-01", account=None, data_dir=tmp_path, facts=facts, _report=nothing)
    with pytest.raises(TaskFailure) as failure:
        asyncio.run(updates.install(ctx, params))
    assert not (tmp_path / "versions" / "9.9.9").exists()
    return failure.value


def test_a_daemon_without_the_launcher_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: Ed25519PrivateKey) -> None:
    failure = _refusal(tmp_path, monkeypatch, _params(key), managed=False,
                       update_public_key=public_key_text(key.public_key()))
    assert failure.code == WireErrorCode.UPDATE_UNAVAILABLE and "--managed" in failure.message


def test_a_device_without_the_release_key_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: Ed25519PrivateKey) -> None:
    failure = _refusal(tmp_path, monkeypatch, _params(key))
    assert failure.code == WireErrorCode.UPDATE_UNAVAILABLE and "FLEET_UPDATE_PUBLIC_KEY" in failure.message


def test_a_forged_release_is_refused_before_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: Ed25519PrivateKey) -> None:
    failure = _refusal(tmp_path, monkeypatch, _params(Ed25519PrivateKey.generate()),
                       update_public_key=public_key_text(key.public_key()))
    assert failure.code == WireErrorCode.PACKAGE_INVALID and "signature" in failure.message


def test_a_version_on_trial_refuses_another_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   key: Ed25519PrivateKey) -> None:
    save_state(tmp_path / "versions", UpdateState(trial=TRIAL))
    failure = _refusal(tmp_path, monkeypatch, _params(key), update_public_key=public_key_text(key.public_key()))
    assert failure.code == WireErrorCode.UPDATE_UNAVAILABLE and "on trial" in failure.message


def test_keygen_writes_a_pair_that_signs_releases_devices_accept(tmp_path: Path, fleet: Any) -> None:
    from cli.releases import sign_release
    from schemas.signing import parse_public_key

    code, out = fleet("release", "keygen", "--out", str(tmp_path / "release.key"))
    public = (tmp_path / "release.pub").read_text().strip()
    assert code == 0 and f"FLEET_UPDATE_PUBLIC_KEY={public}" in out
    assert (tmp_path / "release.key").stat().st_mode & 0o077 == 0
    signature = sign_release(tmp_path / "release.key", "0.2.0", "0" * 64, NAME)
    assert signature_problem(parse_public_key(public), "0.2.0", "0" * 64, NAME, signature) is None
    code, _out = fleet("release", "keygen", "--out", str(tmp_path / "release.key"))
    assert code == 2  # an existing key is never overwritten without --force


# ---- the drain before an update ------------------------------------------------------------------


def test_the_drain_lets_running_tasks_finish_and_hands_waiting_ones_back(tmp_path: Path) -> None:
    from device.executor import Executor
    from device.handlers.registry import load_registry
    from device.intake import TaskRequest, read_task
    from device.journal import Journal, journal_path
    from device.reporter import Reporter
    from schemas.events import EventKind, TaskEvent

    registry = load_registry()
    journal = Journal(journal_path(tmp_path, "pc-01"))
    published: list[TaskEvent] = []
    started = asyncio.Event()

    def publish(raw: bytes) -> None:
        event = TaskEvent.model_validate_json(raw)
        published.append(event)
        if event.task_id == "running" and event.event == EventKind.STARTED:
            started.set()

    reporter = Reporter(journal, "pc-01", lambda: "s-1", publish)
    facts = DeviceFacts(name="pc-01", version="0", hostname="pc-01", os="Linux", python="3.11", keepalive=30)
    executor = Executor(journal=journal, reporter=reporter, device_id="pc-01", data_dir=tmp_path, facts=facts,
                        max_concurrency=1, registry=registry)

    def request(task_id: str, task_type: str, params: str) -> TaskRequest:
        payload = f'{{"id": "{task_id}", "type": "{task_type}", "params": {params}}}'.encode()
        read = read_task("devices/pc-01/tasks", payload, device_id="pc-01", registry=registry, max_payload_bytes=65536)
        assert isinstance(read, TaskRequest)
        return read

    def final(task_id: str) -> TaskEvent:
        return next(e for e in published if e.task_id == task_id and e.event in (EventKind.SUCCEEDED, EventKind.FAILED))

    async def scenario() -> None:
        executor.submit(request("running", "sleep", '{"seconds": 0.2, "steps": 1}'))
        executor.submit(request("waiting", "echo", "{}"))  # the one slot is taken
        await asyncio.wait_for(started.wait(), 5)
        await executor.drain(keep="update", timeout=5)
        assert final("running").event == EventKind.SUCCEEDED
        assert not any(e.task_id == "waiting" and e.event == EventKind.STARTED for e in published), "held"
        await executor.shutdown()

    try:
        asyncio.run(scenario())
        handed_back = final("waiting")
        assert handed_back.error is not None and handed_back.error.code == WireErrorCode.INTERRUPTED
        assert handed_back.error.retryable and "stopped for an update before this task started" in handed_back.error.message
    finally:
        journal.close()
