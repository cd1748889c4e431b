"""The device launcher, `fleet device --managed`: runs the daemon as a child process and starts
it again in a new version after a remote update (docs/architecture.md#remote-update).

The child is this Python interpreter (`sys.executable`, nothing else is ever started) running
`cli.entry.main` with the active version's directory first on `sys.path` (`-P` keeps the
working directory off it), so the daemon's code, and the version it reports, are that
release's. The launcher's own code is the installed package's and does not change.

What the launcher does when its child exits (`after_exit`, the whole decision):

- a trial version (just installed, see `device.update_store`) exited before it proved itself
  healthy, or did not within FLEET_UPDATE_START_TIMEOUT: roll back (the active version runs
  again and reports the update failed, with the trial's last stderr line as the reason);
- `UPDATE_EXIT`: start the version now on trial;
- anything else: exit with the child's status (a service manager restarts the launcher).

Portable: the child is stopped with `Popen.terminate` (TerminateProcess on Windows), its state is
read from exit statuses and the shared state file, never from POSIX signals.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from config import FleetSettings
from config.logging import configure_logging
from device.update_store import (
    MANAGED_ENV,
    UPDATE_EXIT,
    Failure,
    UpdateState,
    load_state,
    save_state,
    version_path,
    versions_dir,
)

log = logging.getLogger(__name__)

# Runs in the child: the version directory (or "") is its first argument, the daemon's the rest.
BOOT = "import sys; p = sys.argv.pop(1); p and sys.path.insert(0, p); from cli.entry import main; main()"
POLL = 0.25  # seconds between two looks at a running trial
REASON_MAX = 500


@dataclass(frozen=True)
class Decision:
    """What to do after the child exited: run it again (with `state` saved first) or exit."""

    restart: bool
    state: UpdateState
    exit_code: int = 0


def after_exit(state: UpdateState, ran_trial: str | None, code: int, reason: str) -> Decision:
    """The launcher's decision when its child exited with `code`; `ran_trial`: the trial version
    the child ran (None when it ran the active one); `state`: the state file as it is now."""
    trial = state.trial
    if ran_trial is not None and trial is not None and trial.version == ran_trial:
        failure = Failure(version=trial.version, previous_version=trial.previous_version, task_key=trial.task_key,
                          reason=reason or f"it exited with status {code} before it was healthy")
        return Decision(True, state.model_copy(update={"trial": None, "failure": failure}))
    if code == UPDATE_EXIT:
        return Decision(True, state)
    return Decision(False, state, code)


def child_argv(version_dir: Path | None, daemon_args: Sequence[str]) -> list[str]:
    return [sys.executable, "-P", "-c", BOOT, str(version_dir or ""), "device", *daemon_args]


class Child:
    """One run of the daemon; its stderr is passed through and its last line kept."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, MANAGED_ENV: str(os.getpid())}  # the daemon stops if this process is gone
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE, env=env)
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._pump, args=(self.process.stderr,), daemon=True)
        self._reader.start()

    def _pump(self, stream: IO[bytes]) -> None:
        out = getattr(sys.stderr, "buffer", None)
        for raw in iter(stream.readline, b""):
            if out is not None:
                out.write(raw)
                out.flush()
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.lines.append(line)

    def last_line(self) -> str:
        self._reader.join(timeout=5)
        return self.lines[-1][:REASON_MAX] if self.lines else ""


class Launcher:
    """Runs the daemon until it exits for good (see the module docstring)."""

    def __init__(self, settings: FleetSettings, daemon_args: Sequence[str]) -> None:
        self.settings = settings
        self.root = versions_dir(settings.data_dir)
        self.daemon_args = list(daemon_args)
        self.child: Child | None = None
        self.stopping = False

    def stop(self, *_args: Any) -> None:
        """Stop the child and then the launcher (a signal handler, or Ctrl-C)."""
        self.stopping = True
        if self.child is not None and self.child.process.poll() is None:
            self.child.process.terminate()

    def run(self) -> int:
        while True:
            state = load_state(self.root)
            trial = state.trial.version if state.trial else None
            version = trial or state.active
            log.info("starting the daemon, version %s%s", version or "installed", " (on trial)" if trial else "")
            self.child = Child(child_argv(version_path(self.root, version), self.daemon_args))
            code, timed_out = self._wait(trial)
            reason = f"not healthy within {self.settings.update_start_timeout:g} s" if timed_out else self.child.last_line()
            if self.stopping:
                return 0 if code in (0, UPDATE_EXIT) or code < 0 else code
            decision = after_exit(load_state(self.root), trial, code, reason)
            if not decision.restart:
                log.info("the daemon exited with status %d", decision.exit_code)
                return decision.exit_code
            if decision.state.failure is not None and decision.state.failure.version == trial:
                log.error("version %s failed (%s): rolling back to %s", trial, reason, state.active or "installed")
            save_state(self.root, decision.state)

    def _wait(self, trial: str | None) -> tuple[int, bool]:
        """The child's exit status, and whether it was stopped for not proving a trial healthy in time."""
        assert self.child is not None
        process = self.child.process
        deadline = time.monotonic() + self.settings.update_start_timeout
        while trial is not None:
            try:
                return process.wait(timeout=POLL), False
            except subprocess.TimeoutExpired:
                pass
            current = load_state(self.root).trial
            if current is None or current.version != trial:
                break  # proven healthy: from now on it is the active version
            if time.monotonic() > deadline and not self.stopping:
                log.error("version %s not healthy within %g s: stopping it", trial, self.settings.update_start_timeout)
                process.terminate()
                return process.wait(), True
        return process.wait(), False


def run_launcher(settings: FleetSettings, daemon_args: Sequence[str]) -> int:
    """Run the launcher in the foreground until it or its daemon stops; its exit status."""
    configure_logging(settings.log_level)
    launcher = Launcher(settings, daemon_args)
    for name in ("SIGTERM", "SIGBREAK"):  # SIGBREAK: Ctrl-Break on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), launcher.stop)
    try:
        return launcher.run()
    except KeyboardInterrupt:  # Ctrl-C reaches the child too (same console / process group)
        launcher.stop()
        if launcher.child is not None:
            launcher.child.process.wait()
        return 0
