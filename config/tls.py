"""How HTTPS clients of the controller (the CLI, `fleet watch`, a device fetching media) verify
it, and the message they give when its certificate is not trusted. Standard library only: the
device daemon imports it."""

from __future__ import annotations

import ssl
from pathlib import Path

from config.settings import ENV_PREFIX
from schemas.errors import ConfigError

CA_SETTING = f"{ENV_PREFIX}API_CA_FILE"


class CaFileError(ConfigError, ValueError):
    """FLEET_API_CA_FILE cannot be used; the message says why."""


def client_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What httpx's `verify` gets: the system's CAs, and `ca_file`'s too when given (a device
    also fetches media from public hosts on FLEET_UPLOAD_ALLOWED_HOSTS)."""
    if ca_file is None:
        return True
    context = ssl.create_default_context()  # the system's CAs
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise CaFileError(f"{CA_SETTING}={ca_file} holds no usable CA certificate ({exc.__class__.__name__}); "
                          "give a PEM file (-----BEGIN CERTIFICATE-----)") from None
    return context


def untrusted_certificate(exc: BaseException, url: str) -> str | None:
    """A readable line when `exc` (an httpx error) failed on the server's certificate, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = seen.verify_message or "certificate verify failed"
            return (f"the HTTPS certificate of {url} is not trusted ({reason}); set {CA_SETTING} to "
                    "the CA file that signed it (or the certificate itself, when self-signed)")
        seen = seen.__cause__ or seen.__context__
    return None
