"""One settings model for broker, controller, device and CLI.

Sources, highest priority first: explicit overrides (CLI flags), `FLEET_*` environment
variables, a `.env` file in the working directory, a TOML config file (`FLEET_CONFIG`, else
`./fleet.toml` when present), then the defaults, which make `fleet up` work with no
configuration at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import AnyUrl, Field, SecretStr, TypeAdapter, UrlConstraints, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from typing_extensions import Annotated

from config.settings_alerts import ALERT_SECRET_FIELDS, AlertSettings
from config.settings_api_tls import ApiTlsSettings
from config.settings_device_log import DeviceLogSettings
from config.settings_groups import GroupSettings
from config.settings_housekeeping import HousekeepingSettings
from config.settings_jobs import JobSettings
from config.settings_live import LiveSettings
from config.settings_metrics import MetricsSettings
from config.settings_schedules import ScheduleSettings
from config.settings_updates import UpdateSettings
from config.settings_vault import VaultSettings
from schemas.common import DEVICE_ID_PATTERN, GroupName
from schemas.errors import ConfigError

ENV_PREFIX = "FLEET_"
DEFAULT_CONFIG_FILE = "fleet.toml"
# 1883 is the registered MQTT port; the embedded broker defaults to 1884 so it can run beside
# a system Mosquitto, which usually holds 1883.
DEFAULT_BROKER_PORT = 1884
DEFAULT_API_PORT = 8080
DEFAULT_BROKER_MAX_PACKET_BYTES = 1024 * 1024
# QoS 1 messages a broker keeps for one client that is behind or away (the controller): room for
# every result of a broadcast to 10,000 devices several times over. Mosquitto's default is 1,000.
DEFAULT_BROKER_MAX_QUEUED_MESSAGES = 200_000

MqttUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["mqtt", "mqtts", "ws", "wss"], host_required=True)]
_MQTT_URL: TypeAdapter[AnyUrl] = TypeAdapter(MqttUrl)


def parse_mqtt_urls(value: Any) -> tuple[AnyUrl, ...]:
    """The URLs of an `mqtt_url` setting: one, or several separated by commas (the nodes of one
    clustered broker), all of one scheme. The error names the entry by its number, not its text."""
    entries = [entry.strip() for entry in str(value).split(",")]
    if not any(entries):
        raise ValueError("no broker URL given, e.g. mqtt://127.0.0.1:1883")
    urls: list[AnyUrl] = []
    for number, entry in enumerate(entries, 1):
        where = f"entry {number} of {len(entries)}" if len(entries) > 1 else "the URL"
        if not entry:
            raise ValueError(f"{where} is empty (two commas in a row, or a comma at an end)")
        try:
            urls.append(_MQTT_URL.validate_python(entry))
        except ValidationError as exc:
            raise ValueError(f"{where} is not an mqtt://, mqtts://, ws:// or wss:// URL with a host "
                             f"({exc.errors()[0]['msg']})") from None
    schemes = sorted({url.scheme for url in urls})
    if len(schemes) > 1:
        raise ValueError(f"all URLs must use one scheme (one TLS and transport setting), got {', '.join(schemes)}")
    return tuple(urls)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("mqtt-fleet", appauthor=False))


class SettingsError(ConfigError):
    """A setting is invalid; the message names it and says what is accepted."""


class FleetSettings(UpdateSettings, VaultSettings, AlertSettings, MetricsSettings, DeviceLogSettings, LiveSettings, ScheduleSettings,
                    ApiTlsSettings, JobSettings, HousekeepingSettings, GroupSettings, BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
    )

    # --- MQTT -------------------------------------------------------------------------------
    mqtt_url: str = Field(
        f"mqtt://127.0.0.1:{DEFAULT_BROKER_PORT}",
        description="broker URL: mqtt://[user:pass@]host[:port], mqtts://… for TLS, ws:// or wss://… over a websocket; "
        "several nodes of one clustered broker as a comma-separated list of URLs of one scheme (tried in turn)",
    )
    mqtt_ca_file: Path | None = Field(None, description="CA bundle to verify an mqtts:// broker (system CAs when unset)")
    keepalive: int = Field(30, ge=2, le=3600, description="MQTT keepalive in seconds (2–3600)")
    reconnect_min_delay: float = Field(1.0, gt=0, le=60, description="first reconnect delay, seconds")
    reconnect_max_delay: float = Field(30.0, gt=0, le=3600, description="longest reconnect delay, seconds")
    max_payload_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest task message a device accepts")

    # --- embedded broker --------------------------------------------------------------------
    broker_host: str = Field("127.0.0.1", description="address the embedded broker listens on")
    broker_port: int = Field(DEFAULT_BROKER_PORT, ge=1, le=65535, description="TCP port of the embedded broker (1–65535)")
    broker_session_expiry: int = Field(3600, ge=0, description="seconds a disconnected persistent session is kept")
    broker_retained_file: Path | None = Field(
        None, description="SQLite file the embedded broker keeps retained messages in; default <data_dir>/broker-retained.sqlite3"
    )
    broker_max_packet_bytes: int = Field(
        DEFAULT_BROKER_MAX_PACKET_BYTES, ge=4096, le=256 * 1024 * 1024,
        description="largest message the embedded broker takes; a client that sends a larger one is disconnected",
    )

    broker_max_queued_messages: int = Field(
        DEFAULT_BROKER_MAX_QUEUED_MESSAGES, ge=1, le=100_000_000,
        description="QoS 1 messages the embedded broker keeps for one disconnected persistent session "
        "(the controller's while it restarts); newer ones are dropped, with a warning",
    )

    broker_certfile: Path | None = Field(None, description="PEM certificate (chain): the embedded broker listens with TLS")
    broker_keyfile: Path | None = Field(None, description="PEM private key of FLEET_BROKER_CERTFILE")
    broker_ws_port: int | None = Field(
        None, ge=1, le=65535, description="port of the embedded broker's MQTT-over-websocket listener (wss with the certificate)"
    )
    broker_allow_anonymous: bool = Field(
        False, description="let clients without a login into the embedded broker (a lab only; every topic open)"
    )
    broker_password_file: Path | None = Field(
        None, description="Mosquitto password file the controller keeps current for provisioned identities"
    )
    broker_acl_file: Path | None = Field(None, description="Mosquitto ACL file the controller keeps current")
    broker_pid_file: Path | None = Field(
        None, description="pid file of the broker (Mosquitto or nats-server) reading those files; it is sent SIGHUP "
        "to reload after every change",
    )
    nats_auth_file: Path | None = Field(
        None, description="NATS authorization file (users, bcrypt hashes, subject permissions) the controller keeps "
        "current for provisioned identities; a nats-server config includes it",
    )

    # --- controller -------------------------------------------------------------------------
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/controller.db (e.g. postgresql+psycopg://…)"
    )
    api_host: str = Field("127.0.0.1", description="address the REST API listens on")
    api_port: int = Field(DEFAULT_API_PORT, ge=1, le=65535, description="port of the REST API (1–65535)")
    api_url: str | None = Field(None, description="REST API the CLI talks to; default http://<api_host>:<api_port>")
    controller_client_id: str | None = Field(
        None, min_length=1, max_length=64, description="MQTT client id of the controller; default one generated on "
        "first start and kept in <data_dir>/controller-client-id (fleet-controller-<host>-<random>), so every "
        "controller has its own and keeps its broker session across restarts",
    )
    shared_subscription_group: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="share device messages among the controllers that set the same group, through "
        "$share/<group>/… subscriptions (Mosquitto, EMQX; not NATS): each message reaches one of them. "
        "Unset: every controller receives every message",
    )
    sweep_lease: float = Field(
        5.0, ge=1, le=600, description="seconds the controller running the sweeps (expiries, timeouts, retries, "
        "re-sends) holds that job without renewing it; another controller takes over this long after it died",
    )
    unacked_grace: float = Field(
        5.0, ge=0.5, le=3600, description="seconds a queued task whose message no broker acknowledged waits before "
        "the sweeping controller publishes it (a task accepted by a controller without a broker link)",
    )
    admin_token: SecretStr | None = Field(
        None, description="an admin API token the controller accepts (set once, e.g. from a secret store); min 24 characters",
        min_length=24,
    )
    api_token: SecretStr | None = Field(None, description="the token the fleet CLI sends; default <data_dir>/api-token")
    public_api_url: str | None = Field(
        None, description="the controller's address as devices reach it, for file URLs; default FLEET_API_URL"
    )
    file_url_key: SecretStr | None = Field(
        None, description="key that signs file download URLs (same on every controller); default a key in the data dir"
    )
    upload_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="hosts (host or host:port; '*' for any) devices may fetch upload media from besides their "
        "controller's signed file links (JSON list in env vars)",
    )
    max_request_bytes: int = Field(1024 * 1024, ge=1024, description="largest REST request body except file uploads")
    device_message_rate: float = Field(
        50.0, gt=0, le=100_000, description="results/heartbeats per second one device may send on average"
    )
    device_message_burst: int = Field(500, ge=1, le=1_000_000, description="how many it may send at once")
    device_status_rate: float = Field(
        1.0, gt=0, le=10_000, description="status messages (births, wills) per second one device may send on average; "
        "over it only its latest is recorded, once the budget refills"
    )
    device_status_burst: int = Field(5, ge=1, le=100_000, description="how many status messages it may send at once")
    max_upload_bytes: int = Field(8 * 1024**3, ge=1024, description="largest file POST /api/v1/files accepts")
    file_store: Literal["local", "database"] = Field(
        "local", description="where uploaded files are kept: local (files in <data_dir>/files, served by this "
        "controller only) or database (in the SQL database, served by every controller that shares it)",
    )
    idempotency_key_ttl: int = Field(
        86_400, ge=60, le=30 * 86_400, description="seconds an Idempotency-Key of a create request is remembered "
        "(60 s – 30 days); a request repeated within that time creates nothing new",
    )
    sweep_interval: float = Field(1.0, gt=0, le=60, description="seconds between checks for expiries, timeouts and due retries")
    task_timeout_grace: float = Field(
        15.0, ge=0, le=3600, description="seconds past a task's timeout before the controller gives up on a silent device"
    )
    task_resend_after: float = Field(
        30.0, ge=0.1, le=86_400, description="seconds without news of an unfinished task before the controller sends it "
        "to its device again (then twice as long after each unanswered re-send, up to an hour)",
    )

    # --- device -----------------------------------------------------------------------------
    device_id: str | None = Field(
        None, pattern=DEVICE_ID_PATTERN, description="letters, digits, '.', '_', '-' (1–64); generated once when unset"
    )
    device_name: str | None = Field(None, max_length=200, description="display name; the host name when unset")
    data_dir: Path = Field(default_factory=default_data_dir, description="where ids, journals and databases live")
    groups: list[GroupName] = Field(default_factory=list, description="device groups (JSON list in env vars)")
    accounts: list[str] = Field(default_factory=list, description="accounts this device serves (JSON list in env vars)")
    max_concurrency: int = Field(2, ge=1, le=64, description="tasks a device runs at once (1–64)")
    browser_path: Path | None = Field(None, description="Chromium/Chrome executable; found automatically when unset")
    browser_headless: bool = Field(True, description="run the browser without a window (false: watch it work)")
    browser_no_sandbox: bool | None = Field(None, description="Chromium's --no-sandbox; on by default only when run as root")
    platform_urls: dict[str, str] = Field(
        default_factory=dict, description='base URL per platform, e.g. {"reference": "http://127.0.0.1:8090"} (JSON)'
    )
    locator_dir: Path | None = Field(
        None, description="folder of <platform>.toml locator files that replace the shipped ones (a quick fix for a site change)"
    )
    task_signing: bool = Field(
        False, description="the controller signs every task with its Ed25519 key (FLEET_TASK_SIGNING_PRIVATE_KEY_FILE)"
    )
    task_signing_private_key_file: Path | None = Field(
        None, description="the controller's Ed25519 private key (PEM); default <data_dir>/task-signing-key.pem, "
        "created on first start when FLEET_TASK_SIGNING is true. Setting it turns signing on",
    )
    task_signing_public_keys: list[str] = Field(
        default_factory=list, description="public keys (base64, JSON list) a device trusts; when set, it runs signed tasks only",
    )
    task_signing_key: SecretStr | None = Field(
        None, description="no longer used: set FLEET_TASK_SIGNING=true on the controller and FLEET_TASK_SIGNING_PUBLIC_KEYS "
        "on devices (see the README, Signed tasks), then remove FLEET_TASK_SIGNING_KEY",
    )
    heartbeat_interval: int = Field(
        30, ge=1, le=3600, description="seconds between a device's heartbeats; 2 intervals without one mark it offline (1–3600)"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("mqtt_url", mode="before")
    @classmethod
    def _mqtt_urls(cls, value: Any) -> str:
        """One URL or a comma-separated list; each entry checked, never echoed (it may hold a password)."""
        return ",".join(str(url) for url in parse_mqtt_urls(value))

    @property
    def mqtt_urls(self) -> tuple[AnyUrl, ...]:
        """The broker URLs of `mqtt_url`, in the order a client tries them."""
        return parse_mqtt_urls(self.mqtt_url)

    @field_validator("task_signing_key")
    @classmethod
    def _hmac_key_retired(cls, value: SecretStr | None) -> None:
        if value is not None:
            raise ValueError("HMAC task signing was replaced by Ed25519 signatures")
        return None

    @field_validator("task_signing_public_keys")
    @classmethod
    def _public_keys(cls, value: list[str]) -> list[str]:
        from schemas.signing import parse_public_key

        for number, text in enumerate(value, 1):
            try:
                parse_public_key(text)
            except ValueError as exc:
                raise ValueError(f"key {number}: {exc}") from None
        return value

    @property
    def signs_tasks(self) -> bool:
        """Whether the controller signs the tasks it publishes."""
        return self.task_signing or self.task_signing_private_key_file is not None

    @property
    def resolved_task_signing_private_key_file(self) -> Path:
        return self.task_signing_private_key_file or self.data_dir / "task-signing-key.pem"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        if config_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        elif f"{ENV_PREFIX}CONFIG" in os.environ:
            raise SettingsError(f"{ENV_PREFIX}CONFIG: config file {config_file} does not exist")
        return tuple(sources)

    # --- derived values ---------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'controller.db'}"

    @property
    def resolved_broker_retained_file(self) -> Path:
        return self.broker_retained_file or self.data_dir / "broker-retained.sqlite3"

    @property
    def public_base_url(self) -> str:
        """The controller as devices reach it (file download URLs)."""
        return (self.public_api_url or self.resolved_api_url).rstrip("/")

    @property
    def resolved_api_url(self) -> str:
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        scheme = "https" if self.api_certfile is not None else "http"
        return (self.api_url or f"{scheme}://{host}:{self.api_port}").rstrip("/")


def _describe(error: Mapping[str, Any]) -> str:
    field = str(error["loc"][0]) if error["loc"] else "?"
    info = FleetSettings.model_fields.get(field)
    accepted = f" Accepted: {info.description}." if info is not None and info.description else ""
    given = error.get("input")
    secret = field in ("mqtt_url", "admin_token", "api_token", "file_url_key", "task_signing_key", *ALERT_SECRET_FIELDS)
    shown = "" if isinstance(given, dict) or secret else f" (got {given!r})"
    return f"{ENV_PREFIX}{field.upper()} ({field}): {error['msg']}{shown}.{accepted}"


def load_settings(**overrides: Any) -> FleetSettings:
    """Read settings, turning validation errors into one readable `SettingsError`.

    The offending value of `mqtt_url` is never echoed, because it may carry a password.
    """
    try:
        return FleetSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise SettingsError("invalid setting:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:  # e.g. a TOML syntax error or a non-JSON list in an env var
        raise SettingsError(f"invalid configuration: {exc}") from None
