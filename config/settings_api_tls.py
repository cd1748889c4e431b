"""Settings of HTTPS for the REST API and its signed file links (docs/architecture.md#https-for-the-rest-api):
the controller's certificate, and the CA its clients (the CLI, `fleet watch`, devices fetching
media) verify it with."""

from __future__ import annotations

from pydantic import Field, FilePath, model_validator
from pydantic_settings import BaseSettings


class ApiTlsSettings(BaseSettings):
    api_certfile: FilePath | None = Field(
        None, description="PEM certificate (chain) of the REST API: with FLEET_API_KEYFILE the controller serves "
        "HTTPS, and its file links are https",
    )
    api_keyfile: FilePath | None = Field(None, description="PEM private key of FLEET_API_CERTFILE")
    api_ca_file: FilePath | None = Field(
        None, description="CA bundle (PEM) the CLI and devices verify the controller's HTTPS certificate with, for a "
        "private CA or a self-signed certificate; the system's CAs when unset",
    )

    @model_validator(mode="after")
    def _certificate_and_key(self) -> "ApiTlsSettings":
        if (self.api_certfile is None) != (self.api_keyfile is None):
            raise ValueError("give both FLEET_API_CERTFILE and FLEET_API_KEYFILE (the certificate and its key), or neither")
        return self
