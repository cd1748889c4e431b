"""The fleet's one exception tree and the error codes that go on the wire.

Every exception the project raises on purpose derives from `FleetError`, one subclass per
area, the way aiomqtt has `MqttError` → `MqttCodeError` → `MqttConnectError`:

    FleetError
    ├── ConfigError          settings and listener configuration (config/, broker/)
    ├── BrokerError          the embedded broker (broker/)
    ├── ControllerError      the controller and its services (controller/)
    ├── DeviceError          the device daemon (device/)
    └── FleetCodeError       an error that carries a `WireErrorCode` (a device's `TaskFailure`)

The concrete classes live next to the code that raises them (`broker.embedded.PortInUseError`,
`controller.services.errors.NotFoundError`, `device.handlers.base.TaskFailure`, ...); a class
that callers also catch as `ValueError` or `RuntimeError` keeps that as a second base.

`WireErrorCode` lists every `code` a device sends in the `error` of a `rejected` or `failed`
event (`schemas.events.TaskError`); the README's "Error codes" section explains each. Task
types added as plug-ins may send codes of their own, so `TaskError.code` stays a string.
"""

from __future__ import annotations

from enum import StrEnum


class WireErrorCode(StrEnum):
    """The machine-readable reasons of `rejected` and `failed` task events."""

    # rejected: the task message itself is unusable (never retried)
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_JSON = "invalid_json"
    INVALID_TASK = "invalid_task"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_PARAMS = "invalid_params"
    UNSIGNED = "unsigned"
    INVALID_SIGNATURE = "invalid_signature"
    STALE_SIGNATURE = "stale_signature"
    REPLAYED_NONCE = "replayed_nonce"
    UNKNOWN_SIGNING_KEY = "unknown_signing_key"
    WRONG_TARGET = "wrong_target"
    RETAINED_TASK = "retained_task"
    # failed: the device or the handler could not finish the task
    INTERRUPTED = "interrupted"
    HANDLER_ERROR = "handler_error"
    INTERNAL_ERROR = "internal_error"
    INPUT_TIMEOUT = "input_timeout"
    INPUT_UNAVAILABLE = "input_unavailable"
    DOWNLOAD_FAILED = "download_failed"
    DOWNLOAD_CORRUPT = "download_corrupt"
    URL_NOT_ALLOWED = "url_not_allowed"
    # failed: remote update (`update` tasks, docs/architecture.md#remote-update)
    UPDATE_UNAVAILABLE = "update_unavailable"
    PACKAGE_INVALID = "package_invalid"
    UPDATE_FAILED = "update_failed"
    # failed: written by the controller
    INVALID_EVENT = "invalid_event"
    # failed: browser tasks (login, upload, chat)
    ACCOUNT_REQUIRED = "account_required"
    UNKNOWN_PLATFORM = "unknown_platform"
    BROWSER_UNAVAILABLE = "browser_unavailable"
    BROWSER_ERROR = "browser_error"
    LOCATOR_INVALID = "locator_invalid"
    LOCATOR_MISSING = "locator_missing"
    SELECTOR_MISSING = "selector_missing"
    SITE_ERROR = "site_error"
    NOT_LOGGED_IN = "not_logged_in"
    LOGIN_TIMEOUT = "login_timeout"
    LOGIN_FAILED = "login_failed"
    UPLOAD_TIMEOUT = "upload_timeout"
    RECIPIENT_NOT_FOUND = "recipient_not_found"
    # failed: the session vault (session_backup, session_restore)
    VAULT_KEY_MISSING = "vault_key_missing"
    VAULT_KEY_MISMATCH = "vault_key_mismatch"
    VAULT_BLOB_INVALID = "vault_blob_invalid"
    BACKUP_UPLOAD_FAILED = "backup_upload_failed"


class FleetError(Exception):
    """The root of every exception the fleet raises on purpose; its message says what is wrong
    and how to fix it."""


class ConfigError(FleetError):
    """A setting or a configuration file is invalid."""


class BrokerError(FleetError):
    """The embedded broker cannot start or refuses something."""


class ControllerError(FleetError):
    """The controller cannot start or refuses a request."""


class DeviceError(FleetError):
    """The device daemon cannot do something it was asked to."""


class FleetCodeError(FleetError):
    """An error with a wire error code, reported as the `error.code` of a task event."""

    def __init__(self, code: WireErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


__all__ = [
    "BrokerError",
    "ConfigError",
    "ControllerError",
    "DeviceError",
    "FleetCodeError",
    "FleetError",
    "WireErrorCode",
]
