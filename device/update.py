"""The `update` task and the daemon's side of remote update (docs/architecture.md#remote-update).

An update, in the daemon that receives it:

1. refuse unless the daemon runs under the launcher (`fleet device --managed`, which restarts
   it) and has the release public key (FLEET_UPDATE_PUBLIC_KEY): `update_unavailable`;
2. check the release signature over version, sha256 and file name, then download the wheel
   and check its bytes against that sha256, then unpack it into `<data dir>/versions/<version>/`;
   anything wrong is `package_invalid`, and this version goes on running;
3. drain (`Executor.drain`): tasks not started yet are handed back, running ones get
   FLEET_UPDATE_DRAIN_TIMEOUT seconds;
4. record the new version as on trial (`device.update_store`) and exit with `UPDATE_EXIT`; the
   task stays open in the journal (`TaskHandedOver`).

The launcher starts the new version. Once it has been connected for FLEET_UPDATE_HEALTHY_AFTER
seconds, it makes itself the active version and reports the task succeeded with the old and new
versions (`Updates.confirm`). If it exits before that, the launcher rolls back, and the old
version reports the task failed (`update_failed`) with the reason (`Updates.report_previous`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import FleetSettings
from device.facts import package_version
from device.handlers.base import TaskContext, TaskFailure, TaskHandedOver, TaskHandler
from device.journal import RunRef
from device.reporter import Reporter, task_error
from device.update_store import (
    MANAGED_ENV,
    UPDATE_EXIT,
    PackageError,
    Trial,
    UpdateState,
    load_state,
    prune_versions,
    save_state,
    unpack_wheel,
    versions_dir,
)
from device.url_policy import UrlPolicy
from schemas.errors import WireErrorCode
from schemas.events import EventKind
from schemas.releases import UPDATE_TYPE, UpdateParams, signature_problem, wheel_version

if TYPE_CHECKING:
    from device.executor import Executor

log = logging.getLogger(__name__)

BORN_POLL = 0.2  # seconds between two looks at whether a new version is connected
LAUNCHER_POLL = 1.0  # seconds between two looks at whether the launcher still runs


def unavailable(message: str) -> TaskFailure:
    return TaskFailure(WireErrorCode.UPDATE_UNAVAILABLE, message)


class Updates:
    """The daemon's side of remote update: host of the `update` handler, reporter of the previous
    process's update, and the proof that a new version is healthy."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.root = versions_dir(settings.data_dir)
        launcher = os.environ.get(MANAGED_ENV, "")
        self.managed = launcher.isdigit()
        self.launcher_pid = int(launcher) if self.managed else None
        self.exit_code = 0  # UPDATE_EXIT once the daemon stops to run a new version
        self._state = load_state(self.root) if self.managed else UpdateState()
        self._busy = False
        self._executor: Executor | None = None
        self._reporter: Reporter | None = None
        self._born: Callable[[], bool] = lambda: False
        self._stop: Callable[[], None] = lambda: None

    def attach(self, executor: Executor, reporter: Reporter, born: Callable[[], bool], stop: Callable[[], None]) -> None:
        self._executor, self._reporter, self._born, self._stop = executor, reporter, born, stop

    def handed_over(self) -> frozenset[str]:
        """Journal keys of update tasks this module reports, not `fail_interrupted`."""
        keys = {self._state.trial.task_key} if self._state.trial else set()
        if self._state.failure:
            keys.add(self._state.failure.task_key)
        return frozenset(keys)

    async def watch_launcher(self) -> None:
        """Under the launcher: stop when it is gone (killed without a chance to stop this daemon,
        e.g. by a service manager that kills one process), so no daemon runs on unsupervised."""
        if self.launcher_pid is None:
            return
        import psutil

        try:
            launcher = psutil.Process(self.launcher_pid)
        except psutil.Error:
            launcher = None
        while launcher is not None and launcher.is_running():  # is_running also sees a re-used pid
            await asyncio.sleep(LAUNCHER_POLL)
        log.error("the launcher (pid %d) is gone: stopping", self.launcher_pid)
        self._stop()

    # --- after a restart ----------------------------------------------------------------

    def report_previous(self) -> None:
        """A trial rolled back by the launcher: this (old) version reports its task failed."""
        failure = self._state.failure
        if failure is None or self._reporter is None:
            return
        self._state = self._state.model_copy(update={"failure": None})
        save_state(self.root, self._state)
        message = f"version {failure.version} did not come up and was rolled back to {package_version()}: {failure.reason}"
        self._reporter.finish(
            RunRef.from_key(failure.task_key), EventKind.FAILED,
            error=task_error(WireErrorCode.UPDATE_FAILED, message, retryable=False),
            result={"from": failure.previous_version, "to": failure.version, "running": package_version()},
        )
        log.error("update to %s failed and was rolled back: %s", failure.version, failure.reason)

    async def confirm(self) -> None:
        """On trial: once connected for FLEET_UPDATE_HEALTHY_AFTER seconds, become the active
        version (the launcher no longer rolls back) and report the update task succeeded."""
        trial = self._state.trial
        if trial is None or self._reporter is None:
            return
        while not self._born():
            await asyncio.sleep(BORN_POLL)
        await asyncio.sleep(self.settings.update_healthy_after)
        running = package_version()
        if running != trial.version:
            log.warning("on trial as version %s, but this daemon reports %s", trial.version, running)
        self._state = UpdateState(active=trial.version)
        save_state(self.root, self._state)  # first: once this is on disk, the launcher keeps this version
        self._reporter.finish(RunRef.from_key(trial.task_key), EventKind.SUCCEEDED,
                              result={"from": trial.previous_version, "to": running, "changed": True})
        log.info("updated from %s to %s", trial.previous_version, running)
        prune_versions(self.root, {trial.version, *([trial.previous] if trial.previous else [])})

    # --- the update task ----------------------------------------------------------------

    async def install(self, ctx: TaskContext, params: UpdateParams) -> dict[str, Any]:
        current = package_version()
        if params.version == current:
            return {"from": current, "to": current, "changed": False}
        self._check_possible()
        self._check_signature(params)
        self._busy = True
        try:
            wheel = await self._download(ctx, params)
            try:
                await asyncio.to_thread(unpack_wheel, wheel, self.root, params.version)
            except PackageError as exc:
                raise TaskFailure(WireErrorCode.PACKAGE_INVALID, str(exc)) from None
            finally:
                wheel.unlink(missing_ok=True)
            await ctx.progress(60, f"version {params.version} installed; letting running tasks finish")
            assert self._executor is not None
            drain = self.settings.update_drain_timeout if params.drain_timeout is None else params.drain_timeout
            await self._executor.drain(ctx.task_id, drain)
        except BaseException:
            self._busy = False
            raise
        run = RunRef(ctx.task_id, self._executor.attempt_of(ctx.task_id))
        self._state = self._state.model_copy(update={"trial": Trial(
            version=params.version, previous=self._state.active, previous_version=current, task_key=run.key,
        )})
        save_state(self.root, self._state)
        await ctx.progress(90, f"restarting into version {params.version}")
        log.info("restarting into version %s (from %s)", params.version, current)
        self.exit_code = UPDATE_EXIT
        self._stop()
        raise TaskHandedOver("the new version reports this task")

    def _check_possible(self) -> None:
        if not self.managed:
            raise unavailable("this daemon was not started by the launcher (`fleet device --managed`), which restarts "
                              "it into a new version; run it that way to update it remotely")
        if self._busy:
            raise unavailable("another update is already in progress on this device")
        if self._state.trial is not None:
            raise unavailable(f"this version ({self._state.trial.version}) is still on trial: update it once it has "
                              f"been connected for FLEET_UPDATE_HEALTHY_AFTER ({self.settings.update_healthy_after:g} s)")
        try:
            if self.settings.release_public_key() is None:
                raise unavailable("this device has no release public key (FLEET_UPDATE_PUBLIC_KEY or "
                                  "FLEET_UPDATE_PUBLIC_KEY_FILE), so it accepts no update")
        except ValueError as exc:
            raise unavailable(str(exc)) from None

    def _check_signature(self, params: UpdateParams) -> None:
        public = self.settings.release_public_key()
        assert public is not None
        problem = signature_problem(public, params.version, params.sha256, params.file_name, params.signature)
        if problem is not None:
            raise TaskFailure(WireErrorCode.PACKAGE_INVALID, problem)
        if wheel_version(params.file_name) != params.version:
            raise TaskFailure(WireErrorCode.PACKAGE_INVALID, f"the file {params.file_name} is not version {params.version}")

    async def _download(self, ctx: TaskContext, params: UpdateParams) -> Path:
        from device import transfer

        settings = self.settings
        policy = UrlPolicy(settings.public_base_url, tuple(settings.upload_allowed_hosts), settings.api_ca_file)

        async def progress(done: int, total: int | None) -> None:
            if total:
                await ctx.progress(round(50 * done / total), f"downloading version {params.version}")

        try:
            return await transfer.fetch(str(params.url), self.root / "downloads", size=params.size,
                                        sha256=params.sha256, progress=progress, policy=policy)
        except TaskFailure as failure:
            if failure.code == WireErrorCode.DOWNLOAD_CORRUPT:
                raise TaskFailure(WireErrorCode.PACKAGE_INVALID, f"the package was refused: {failure.message}") from None
            raise


class UpdateHandler(TaskHandler[UpdateParams]):
    """`update`: install a signed release and restart into it (see the module docstring)."""

    type = UPDATE_TYPE
    params_model = UpdateParams
    safe_to_retry = False

    def __init__(self, updates: Updates) -> None:
        self._updates = updates

    async def run(self, ctx: TaskContext, params: UpdateParams) -> dict[str, Any]:
        return await self._updates.install(ctx, params)
