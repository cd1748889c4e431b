"""The HTTPS settings of the REST API: a certificate needs its key, files must exist, and the
default API URL turns https with them (docs/architecture.md#https-for-the-rest-api)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import SettingsError, load_settings
from config.tls import CaFileError, client_verify


def test_a_certificate_needs_its_key_and_both_must_exist(tmp_path: Path) -> None:
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(SettingsError, match="give both FLEET_API_CERTFILE and FLEET_API_KEYFILE"):
        load_settings(data_dir=tmp_path, api_certfile=cert)
    with pytest.raises(SettingsError, match="api_keyfile"):
        load_settings(data_dir=tmp_path, api_certfile=cert, api_keyfile=tmp_path / "missing.key")
    https = load_settings(data_dir=tmp_path, api_certfile=cert, api_keyfile=key, api_port=8443)
    assert https.resolved_api_url == "https://127.0.0.1:8443" and https.public_base_url == "https://127.0.0.1:8443"
    assert load_settings(data_dir=tmp_path).resolved_api_url.startswith("http://")


def test_a_ca_file_that_holds_no_certificate_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(CaFileError, match=f"FLEET_API_CA_FILE={junk} holds no usable CA certificate"):
        client_verify(junk)
    assert client_verify(None) is True
