"""Which media URLs a device fetches for an `upload` task: its own controller's signed file
links (`<FLEET_PUBLIC_API_URL>/api/v1/files/<id>/download?expires=…&signature=…`; the controller
checks the signature) and the hosts on FLEET_UPLOAD_ALLOWED_HOSTS. Nothing else: not another
host, not a loopback or private address the task names, not a redirect to one of those."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # httpx is imported when a URL is checked: an idle daemon never loads it
    import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host.lower(), url.port or DEFAULT_PORTS.get(url.scheme, 0)


@dataclass(frozen=True)
class UrlPolicy:
    """Which media URLs this device fetches (see the module docstring)."""

    controller_url: str
    allowed_hosts: tuple[str, ...] = ()
    ca_file: Path | None = None  # FLEET_API_CA_FILE: the CA of the controller's HTTPS certificate

    def problem(self, url: str) -> str | None:
        """Why `url` may not be fetched, or None when it may."""
        import httpx

        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            return "the media URL is not a valid URL"
        if target.scheme not in DEFAULT_PORTS or not target.host:
            return "the media URL must be an http(s) URL with a host"
        if self._is_file_link(target):
            return None
        host, port = target.host.lower(), _origin(target)[2]
        if any(entry == "*" or entry.lower() in (host, f"{host}:{port}") for entry in self.allowed_hosts):
            return None
        return (f"the media URL's host {host}:{port} is neither this device's controller's signed file link "
                f"({self.controller_url}/api/v1/files/<id>/download?…) nor on FLEET_UPLOAD_ALLOWED_HOSTS; "
                "upload the file with `fleet file upload` and use the link it prints, or allow the host")

    def backup_link_problem(self, url: str) -> str | None:
        """Why `url` is not this device's controller's signed backup link (where a
        `session_backup` task PUTs its blob), or None when it is."""
        import httpx

        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            return "the backup upload URL is not a valid URL"
        controller = httpx.URL(self.controller_url)
        prefix = re.escape(controller.path.rstrip("/"))
        if (_origin(target) == _origin(controller)
                and re.fullmatch(prefix + r"/api/v1/backups/[A-Za-z0-9._:-]+", target.path) is not None
                and {"expires", "signature"} <= set(target.params.keys())):
            return None
        return (f"a session backup is sent only to this device's controller's signed backup link "
                f"({self.controller_url}/api/v1/backups/<task>?…); check FLEET_PUBLIC_API_URL")

    def _is_file_link(self, target: httpx.URL) -> bool:
        controller = type(target)(self.controller_url)
        if _origin(target) != _origin(controller):
            return False
        prefix = re.escape(controller.path.rstrip("/"))
        return (re.fullmatch(prefix + r"/api/v1/files/[A-Za-z0-9_-]+/download", target.path) is not None
                and {"expires", "signature"} <= set(target.params.keys()))
