"""Where a device keeps the versions an update installs, and the state the daemon and its
launcher share (docs/architecture.md#remote-update).

`<data dir>/versions/<version>/` holds one release, unpacked from its wheel (a wheel of pure
Python packages is a zip file that goes onto `sys.path` as it is: no pip, no build step; the
packages it needs are those of the running environment). `<data dir>/versions/state.json` says
which version runs (`active`; None: the installed package), which new version is on trial
(`trial`: started by the launcher, not yet proven healthy) and which trial failed (`failure`:
rolled back, to be reported by the version that runs again). Only one process writes it at a
time: the launcher while no daemon runs, the daemon while it runs.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ValidationError

from schemas.errors import DeviceError

log = logging.getLogger(__name__)

UPDATE_EXIT = 75  # the daemon's exit status when it stopped to run a new version (the launcher restarts it)
MANAGED_ENV = "MQTT_FLEET_MANAGED"  # the launcher's pid, set for its daemon: updates are possible
STATE_FILE = "state.json"
DISTRIBUTION = "mqtt_fleet"  # the wheel's distribution name, as its .dist-info spells it


class Trial(BaseModel):
    """A new version started by the launcher and not yet proven healthy."""

    version: str
    previous: str | None  # the version dir to roll back to (None: the installed package)
    previous_version: str  # the version the previous one reported
    task_key: str  # the journal key of the update task that installed it


class Failure(BaseModel):
    """A trial that did not come up, rolled back; the version running again reports it."""

    version: str
    previous_version: str
    task_key: str
    reason: str


class UpdateState(BaseModel):
    active: str | None = None
    trial: Trial | None = None
    failure: Failure | None = None


class PackageError(DeviceError, ValueError):
    """A release package that cannot be installed; the message says why."""


def versions_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "versions"


def load_state(root: Path) -> UpdateState:
    """The shared state; a missing file is the default (the installed package, nothing pending),
    an unreadable one too, logged."""
    path = root / STATE_FILE
    try:
        return UpdateState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return UpdateState()
    except (OSError, ValidationError) as exc:
        log.error("update state %s unreadable (%s): running the installed version", path, type(exc).__name__)
        return UpdateState()


def save_state(root: Path, state: UpdateState) -> None:
    """Write the state atomically (a reader sees the old or the new file, never half of one)."""
    root.mkdir(parents=True, exist_ok=True)
    part = root / f"{STATE_FILE}.part"
    with part.open("w", encoding="utf-8") as file:
        file.write(state.model_dump_json(indent=1))
        file.flush()
        os.fsync(file.fileno())
    os.replace(part, root / STATE_FILE)


def version_path(root: Path, version: str | None) -> Path | None:
    """The directory of an installed version, None for the installed package (or a missing one)."""
    if version is None:
        return None
    path = root / version
    if not path.is_dir():
        log.error("version directory %s is missing: running the installed version", path)
        return None
    return path


def _member_problem(name: str) -> str | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or re.match(r"^[A-Za-z]:", name):
        return f"the package holds a file outside its own tree ({name!r})"
    return None


def wheel_metadata(wheel: zipfile.ZipFile) -> tuple[str, str]:
    """The (dist-info directory, version) of a wheel of this project; PackageError if it is none."""
    dist_infos = {name.split("/")[0] for name in wheel.namelist() if name.split("/")[0].endswith(".dist-info")}
    ours = [name for name in dist_infos if name.lower().startswith(f"{DISTRIBUTION}-")]
    if len(ours) != 1:
        raise PackageError(f"the package is not a wheel of {DISTRIBUTION} (no single {DISTRIBUTION}-*.dist-info)")
    info = ours[0]
    try:
        wheel_text = wheel.read(f"{info}/WHEEL").decode("utf-8")
        metadata = HeaderParser().parsestr(wheel.read(f"{info}/METADATA").decode("utf-8"))
    except (KeyError, UnicodeDecodeError):
        raise PackageError("the wheel's WHEEL or METADATA file is missing or unreadable") from None
    if "root-is-purelib: true" not in wheel_text.lower():
        raise PackageError("the wheel is not pure Python (Root-Is-Purelib is not true); it cannot be unpacked as it is")
    version = metadata.get("Version")
    if not version:
        raise PackageError("the wheel's METADATA names no Version")
    return info, version


def unpack_wheel(wheel_file: Path, root: Path, version: str) -> Path:
    """Unpack a verified wheel into `<root>/<version>/` (replacing an earlier copy of it) and
    return that directory. The wheel must state `version`; PackageError says what is wrong."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / version
    part = root / f"{version}.part"
    shutil.rmtree(part, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel_file) as wheel:
            _info, stated = wheel_metadata(wheel)
            if stated != version:
                raise PackageError(f"the wheel is version {stated}, not {version} as the update says")
            for name in wheel.namelist():
                problem = _member_problem(name)
                if problem is not None:
                    raise PackageError(problem)
            if wheel.testzip() is not None:
                raise PackageError("the wheel is damaged (a member's CRC does not match)")
            wheel.extractall(part)
    except zipfile.BadZipFile:
        shutil.rmtree(part, ignore_errors=True)
        raise PackageError("the package is not a zip file (a wheel is one)") from None
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(part, target)
    return target


def prune_versions(root: Path, keep: set[str]) -> None:
    """Remove version directories other than `keep` (the running one and the one before it)."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and path.name not in keep and path.name != "downloads":
            shutil.rmtree(path, ignore_errors=True)
