"""One browser profile directory per (platform, account), never shared between accounts."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def profile_dir(data_dir: Path, platform: str, account: str) -> Path:
    """`<data dir>/profiles/<platform>/<readable account>-<hash>`: the hash keeps two accounts
    whose names differ only in characters a file system cannot hold apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", account)[:40] or "account"
    digest = hashlib.sha256(f"{platform}\0{account}".encode()).hexdigest()[:12]
    safe_platform = re.sub(r"[^A-Za-z0-9._-]", "_", platform)[:40]
    return Path(data_dir) / "profiles" / safe_platform / f"{readable}-{digest}"
