"""Build `fleet-device`, the device daemon for a PC with no Python, with PyInstaller.

    pip install -e '.[build]'
    python deploy/device-build/build.py            # -> dist/fleet-device/fleet-device[.exe]
    python deploy/device-build/build.py --onefile  # -> dist/fleet-device[.exe], one file

It builds for the OS and CPU it runs on (PyInstaller does not cross-compile): build the Windows
program on Windows (.github/workflows/device-build.yml does it on GitHub's runners). Prints the
build time and the output's size; `--smoke` then runs `fleet-device --version` from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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
    argv = [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm", "--clean",
            "--distpath", str(dist), "--workpath", str(work)]
    if quiet:
        argv += ["--log-level", "WARN"]
    if onefile:
        argv += ["--", "--onefile"]
    subprocess.run(argv, check=True, cwd=ROOT)
    return executable(dist, onefile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onefile", action="store_true", help="one file instead of one folder (slower start)")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / NAME, help="PyInstaller's work folder")
    parser.add_argument("--smoke", action="store_true", help="run `fleet-device --version` from the build")
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
        subprocess.run([str(program), "--version"], check=True, env={"PATH": os.defpath})


if __name__ == "__main__":
    main()
