"""Build `fleet-device`, the device daemon for a PC with no Python, with PyInstaller.

    pip install -e '.[build]'
    python deploy/device-build/build.py            # -> dist/fleet-device/fleet-device[.exe]
    python deploy/device-build/build.py --onefile  # -> dist/fleet-device[.exe], one file

It builds for the OS and CPU it runs on (PyInstaller does not cross-compile): build the Windows
program on Windows (.github/workflows/device-build.yml does it on GitHub's runners). Prints the
build time and the output's size; `--smoke` then runs `fleet-device --version` from it with no
Python on PATH, and `--archive` packs it into dist/fleet-device-<os>-<cpu>.zip (Windows) or
.tar.gz (which keep the executable bits and symlinks a plain folder upload loses).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPEC = HERE / "fleet-device.spec"
NAME = "fleet-device"
EXE_SUFFIX = ".exe" if os.name == "nt" else ""


def executable(dist: Path, onefile: bool) -> Path:
    """Where the build puts the program."""
    return dist / f"{NAME}{EXE_SUFFIX}" if onefile else dist / NAME / f"{NAME}{EXE_SUFFIX}"


def size_bytes(path: Path) -> int:
    """A file's size, or a folder's (every file under it)."""
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file() and not item.is_symlink())


def build(dist: Path, work: Path, onefile: bool = False, quiet: bool = False) -> Path:
    """Run PyInstaller on the spec; return the built program. Raises CalledProcessError."""
    dist, work = dist.resolve(), work.resolve()
    argv = [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm",
            "--distpath", str(dist), "--workpath", str(work)]
    if quiet:
        argv += ["--log-level", "WARN"]
    if onefile:
        argv += ["--", "--onefile"]
    work.mkdir(parents=True, exist_ok=True)
    # Run from the work folder: from the checkout, its mqtt_fleet.egg-info (on sys.path as the
    # working directory) would be the metadata bundled instead of the installed dist-info.
    subprocess.run(argv, check=True, cwd=work)
    return executable(dist, onefile)


def smoke_env() -> dict[str, str]:
    """An environment with no Python: the OS's default PATH, plus what Windows needs to start anything."""
    kept = ("SYSTEMROOT", "WINDIR", "TEMP", "TMP") if os.name == "nt" else ()
    return {"PATH": os.defpath, **{name: os.environ[name] for name in kept if name in os.environ}}


def smoke(program: Path) -> str:
    """`fleet-device --version` from outside the checkout, with no Python on PATH; its output."""
    with tempfile.TemporaryDirectory() as elsewhere:
        result = subprocess.run([str(program), "--version"], check=True, env=smoke_env(), cwd=elsewhere,
                                capture_output=True, text=True, timeout=120)
    if not result.stdout.startswith(f"{NAME} (mqtt-fleet) ") or "unknown" in result.stdout:
        raise RuntimeError(f"unexpected --version output {result.stdout!r}: is the mqtt-fleet metadata bundled?")
    return result.stdout.strip()


def archive(output: Path, dist: Path) -> Path:
    """`output` (the folder or the one file) packed as dist/fleet-device-<os>-<cpu>.zip or .tar.gz."""
    base = dist / f"{NAME}-{sys.platform}-{platform.machine().lower()}"
    fmt = "zip" if os.name == "nt" else "gztar"
    return Path(shutil.make_archive(str(base), fmt, root_dir=output.parent, base_dir=output.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onefile", action="store_true", help="one file instead of one folder (slower start)")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / NAME, help="PyInstaller's work folder")
    parser.add_argument("--smoke", action="store_true", help="run `fleet-device --version` from the build")
    parser.add_argument("--archive", action="store_true", help="pack the build into one .zip/.tar.gz in --dist")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        program = build(args.dist, args.work, args.onefile)
    except subprocess.CalledProcessError as exc:
        print(f"error: PyInstaller failed (exit status {exc.returncode}); its log is above", file=sys.stderr)
        raise SystemExit(1) from None
    seconds = time.monotonic() - started
    output = program if args.onefile else program.parent
    print(f"built {program} in {seconds:.0f} s; {output} is {size_bytes(output) / 1e6:.0f} MB")
    if args.smoke:
        print(f"smoke: {smoke(program)}")
    if args.archive:
        packed = archive(output, args.dist)
        print(f"archive: {packed} ({packed.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
