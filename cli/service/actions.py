"""Carrying out a `ServicePlan`: writing its files and running its commands (argument lists,
never a shell), or, in a dry run, printing both and changing nothing. A command that fails
stops an install with what to run by hand; while uninstalling, a service that is not there is
no error."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from cli.service.common import RegistrationError, ServiceError, ServicePlan, show_command

COMMAND_TIMEOUT = 60


@dataclass(frozen=True)
class Outcome:
    """How one command ended: its exit status (None: it could not be started) and its output."""

    returncode: int | None
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


Runner = Callable[[list[str]], Outcome]
Say = Callable[[str], None]


def run_command(argv: list[str]) -> Outcome:
    """Run `argv` (no shell), its output captured."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError:
        return Outcome(None, f"{argv[0]} is not installed or not on PATH")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    return Outcome(done.returncode, (done.stderr or done.stdout or "").strip())


def describe_dry_run(plan: ServicePlan, platform: str, say: Say, install: bool) -> None:
    """What an install (or uninstall) would do, without doing it."""
    if install:
        for item in plan.files:
            say(f"# would write {item.path} ({plan.kind}):")
            say(item.text.rstrip("\n"))
        lines = [show_command(argv, platform) for argv in [*plan.prepare, *plan.register]]
    else:
        lines = [*(show_command(argv, platform) for argv in plan.stop), *(f"(remove {item.path})" for item in plan.files),
                 *(show_command(argv, platform) for argv in plan.cleanup)]
    say("# would run:")
    for line in lines:
        say(f"  {line}")


def install(plan: ServicePlan, platform: str, say: Say, register: bool = True, run: Runner = run_command) -> None:
    """Write the plan's files, then (`register`) run its commands; a failing one raises
    ServiceError naming the rest to run by hand."""
    for item in plan.files:
        try:
            item.path.parent.mkdir(parents=True, exist_ok=True)
            item.path.write_bytes(item.data)
        except OSError as exc:
            raise ServiceError(f"cannot write {item.path}: {exc.strerror or exc}"
                               + (" (a system unit needs root: sudo)" if isinstance(exc, PermissionError) else ""))
        say(f"wrote {item.path} ({plan.kind})")
    if not register:
        say("not registered (--no-register); to register and start it, run:")
        for argv in plan.register:
            say(f"  {show_command(argv, platform)}")
        return
    for argv in plan.prepare:
        run(argv)  # e.g. unloading an earlier install: fails when there is none
    for number, argv in enumerate(plan.register):
        outcome = run(argv)
        if not outcome.ok:
            status = "could not start" if outcome.returncode is None else f"exit status {outcome.returncode}"
            by_hand = "\n  ".join(show_command(rest, platform) for rest in plan.register[number:])
            raise RegistrationError(f"`{show_command(argv, platform)}` failed ({status}): {outcome.output or 'no output'}\n"
                               f"the file is written; fix the cause and run by hand:\n  {by_hand}")
    say(f"registered and started {plan.kind}")
    for note in plan.notes:
        say(f"note: {note}")


def uninstall(plan: ServicePlan, platform: str, say: Say, run: Runner = run_command) -> None:
    """Stop and unregister the service and remove its files; when none of its files exists, it
    was not installed (by this command): nothing to do."""
    present = [item for item in plan.files if item.path.exists()]
    if not present:
        say(f"not installed: no {', '.join(str(item.path) for item in plan.files)}")
        return
    for argv in plan.stop:
        outcome = run(argv)
        if not outcome.ok:
            say(f"(`{show_command(argv, platform)}`: {outcome.output or 'failed'}; going on)")
    for item in present:
        try:
            item.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ServiceError(f"cannot remove {item.path}: {exc.strerror or exc}")
        say(f"removed {item.path}")
    for argv in plan.cleanup:
        outcome = run(argv)
        if not outcome.ok:
            say(f"(`{show_command(argv, platform)}`: {outcome.output or 'failed'})")
    say(f"uninstalled {plan.kind}")
