"""Turning the dashboard's form fields into the REST API's request models (`TaskCreate`,
`BroadcastCreate`, `AccountCreate`, `AccountUpdate`), with every problem attached to the field
it is about, in the user's language.

A form is a plain `dict[str, str]` of its fields. `FormInvalid.errors` maps a field name (or
`FORM` for the form as a whole) to a translated message; pydantic's own messages are never shown
as they are (they are English and name the model's fields, not the form's)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ValidationError

from controller.dashboard.i18n import N_, translations
from schemas.api import AccountCreate, AccountUpdate, BroadcastCreate, TaskCreate
from schemas.common import new_id
from schemas.errors import ControllerError
from schemas.tasks import BUILTIN_PARAMS, CONTROL_TYPES, ChatParams, LoginParams, UploadParams

FORM = "_form"  # the key of an error about the whole form
Translate = Callable[[str], str]

# Task types a broadcast form offers: the built-in ones an operator sends to many devices.
BROADCAST_TYPES = [t for t in BUILTIN_PARAMS if t not in CONTROL_TYPES]
LOGIN_METHODS = ["qr", "sms", "cookie_check"]

_MESSAGES: dict[str, str] = {
    "missing": N_("This field is required."),
    "string_too_short": N_("This field is required."),
    "string_too_long": N_("Too long: at most %(max_length)s characters."),
    "string_pattern_mismatch": N_("This value is not in the expected format."),
    "greater_than": N_("Must be greater than %(gt)s."),
    "greater_than_equal": N_("Must be at least %(ge)s."),
    "less_than": N_("Must be less than %(lt)s."),
    "less_than_equal": N_("Must be at most %(le)s."),
    "float_parsing": N_("Must be a number."),
    "int_parsing": N_("Must be a whole number."),
    "too_long": N_("Too many items: at most %(max_length)s."),
    "url_parsing": N_("Must be an http:// or https:// URL."),
    "url_scheme": N_("Must be an http:// or https:// URL."),
    "datetime_from_date_parsing": N_("Must be a date and time."),
    "datetime_parsing": N_("Must be a date and time."),
    "literal_error": N_("Choose one of the offered values."),
    "enum": N_("Choose one of the offered values."),
    "value_error": N_("This value is not allowed."),
}
# Hints for a value in the wrong format, by form field.
_PATTERN_HINTS: dict[str, str] = {
    "device_id": N_("A device id: letters, digits, '.', '_' or '-'."),
    "group": N_("A group name: letters, digits, '.', '_' or '-'."),
    "platform": N_("A platform name in lower case, e.g. reference or douyin."),
    "method": N_("Choose one of the offered values."),
}


class FormInvalid(ControllerError):
    """Fields of a form that cannot be accepted: `errors` maps field → translated message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def translator(lang: str) -> Translate:
    return translations(lang).gettext


def _plain(value: Any) -> Any:
    """0.0 → 0: pydantic's limits of float fields, shown as a person writes them."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _message(error: Mapping[str, Any], field: str, _: Translate) -> str:
    kind = str(error.get("type", ""))
    context = dict(error.get("ctx") or {})
    if kind == "string_pattern_mismatch" and field in _PATTERN_HINTS:
        return _(_PATTERN_HINTS[field])
    template = _MESSAGES.get(kind)
    if template is None:
        return _("This value is not valid.")
    try:
        return _(template) % {k: _plain(v) for k, v in context.items()}
    except (KeyError, TypeError, ValueError):
        return _("This value is not valid.")


def field_errors(exc: ValidationError, fields: Mapping[str, str], _: Translate) -> dict[str, str]:
    """Each error of `exc` on the form field its location maps to (`fields`: the model's field
    name → the form's; unmapped locations count against the whole form). The first error of a
    field wins."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]
        field = next((fields[part] for part in reversed(loc) if part in fields), FORM)
        errors.setdefault(field, _message(error, field, _))
    return errors


def _text(form: Mapping[str, str], name: str) -> str | None:
    value = (form.get(name) or "").strip()
    return value or None


def _number(form: Mapping[str, str], name: str, _: Translate, errors: dict[str, str]) -> float | None:
    value = _text(form, name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        errors[name] = _("Must be a number.")
        return None


def parse_when(value: str | None, _: Translate, errors: dict[str, str], name: str) -> datetime | None:
    """A `datetime-local` field's value, taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors[name] = _("Must be a date and time: YYYY-MM-DD HH:MM (UTC).")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _validated(model: type[BaseModel], data: dict[str, Any], fields: Mapping[str, str], _: Translate,
               errors: dict[str, str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for field, message in field_errors(exc, fields, _).items():
            errors.setdefault(field, message)
        return None


_TARGET_FIELDS = {"account": "account", "device_id": "device_id", "id": FORM, "timeout": "timeout"}


def _task(form: Mapping[str, str], task_type: str, params: dict[str, Any], params_model: type[BaseModel],
          param_fields: Mapping[str, str], _: Translate, errors: dict[str, str]) -> TaskCreate:
    """The TaskCreate for a browser task (it acts for an account), or FormInvalid."""
    if _text(form, "account") is None:
        errors.setdefault("account", _("Choose the account the task acts for."))
    params = {k: v for k, v in params.items() if v is not None}  # left out: "required", not "not text"
    _validated(params_model, params, param_fields, _, errors)
    body = {"id": _text(form, "form_id") or new_id(), "type": task_type, "account": _text(form, "account"),
            "device_id": _text(form, "device_id"), "params": params}
    task = _validated(TaskCreate, body, _TARGET_FIELDS, _, errors)
    if errors:
        raise FormInvalid(errors)
    assert isinstance(task, TaskCreate)
    return task


def login_task(form: Mapping[str, str], platform: str | None, _: Translate) -> TaskCreate:
    """A `login` task from the login form; `platform` is the account's when the form left it empty."""
    errors: dict[str, str] = {}
    params: dict[str, Any] = {"platform": _text(form, "platform") or platform, "method": form.get("method") or "qr"}
    if _text(form, "phone"):
        params["phone"] = _text(form, "phone")
    elif params["method"] == "sms":
        errors["phone"] = _("The SMS method needs the phone number the code is sent to.")
    wait = _number(form, "wait", _, errors)
    if wait is not None:
        params["wait"] = wait
    fields = {"platform": "platform", "method": "method", "phone": "phone", "wait": "wait"}
    return _task(form, "login", params, LoginParams, fields, _, errors)


def chat_task(form: Mapping[str, str], platform: str | None, _: Translate) -> TaskCreate:
    errors: dict[str, str] = {}
    params = {"platform": _text(form, "platform") or platform, "to": _text(form, "to"), "message": form.get("message", "")}
    fields = {"platform": "platform", "to": "to", "message": "message"}
    return _task(form, "chat", {k: v for k, v in params.items() if v not in (None, "")}, ChatParams, fields, _, errors)


def upload_fields(form: Mapping[str, str], platform: str | None, _: Translate) -> dict[str, Any]:
    """The upload form's params without the files (checked before any file is stored), or FormInvalid."""
    errors: dict[str, str] = {}
    params: dict[str, Any] = {
        "platform": _text(form, "platform") or platform, "title": (form.get("title") or "").strip(),
        "description": form.get("description") or "",
        "tags": [t.strip() for t in (form.get("tags") or "").replace("，", ",").split(",") if t.strip()],
    }
    when = parse_when(_text(form, "publish_at"), _, errors, "publish_at")
    if when is not None:
        params["publish_at"] = when.isoformat()  # params are JSON
    if not params["title"]:
        errors["title"] = _("Give the video a title.")
    if _text(form, "account") is None:
        errors["account"] = _("Choose the account the task acts for.")
    probe = {**params, "video_url": "http://127.0.0.1/video"}  # the real one exists once the file is stored
    fields = {"platform": "platform", "title": "title", "description": "description", "tags": "tags",
              "publish_at": "publish_at"}
    _validated(UploadParams, {k: v for k, v in probe.items() if v is not None}, fields, _, errors)
    if errors:
        raise FormInvalid(errors)
    return params


def upload_task(form: Mapping[str, str], params: dict[str, Any], _: Translate) -> TaskCreate:
    fields = {"video_url": "video", "cover_url": "cover", "size": "video", "sha256": "video", "platform": "platform"}
    return _task(form, "upload", params, UploadParams, fields, _, {})


def broadcast(form: Mapping[str, str], _: Translate) -> BroadcastCreate:
    errors: dict[str, str] = {}
    task_type = form.get("type") or ""
    if task_type not in BROADCAST_TYPES:
        errors["type"] = _("Choose one of the offered values.")
    params: Any = {}
    raw = (form.get("params") or "").strip()
    if raw:
        try:
            params = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors["params"] = _("Not valid JSON (line %(line)s, column %(column)s).") % {"line": exc.lineno, "column": exc.colno}
        else:
            if not isinstance(params, dict):
                errors["params"] = _('Parameters are a JSON object, e.g. {"message": "hi"}.')
    model = BUILTIN_PARAMS.get(task_type)
    if model is not None and "params" not in errors:
        _validated(model, params, {name: "params" for name in model.model_fields}, _, errors)
    body = {"type": task_type or "ping", "group": _text(form, "group"), "params": params if isinstance(params, dict) else {},
            "include_offline": form.get("include_offline") in ("on", "true", "1"), "account": _text(form, "account")}
    made = _validated(BroadcastCreate, body, {"group": "group", "account": "account", "type": "type"}, _, errors)
    if errors:
        raise FormInvalid(errors)
    assert isinstance(made, BroadcastCreate)
    return made


def account_create(form: Mapping[str, str], _: Translate) -> AccountCreate:
    errors: dict[str, str] = {}
    body = {"name": (form.get("name") or "").strip(), "platform": (form.get("platform") or "").strip(),
            "device_id": (form.get("device_id") or "").strip()}
    made = _validated(AccountCreate, body, {"name": "name", "platform": "platform", "device_id": "device_id"}, _, errors)
    if errors:
        raise FormInvalid(errors)
    assert isinstance(made, AccountCreate)
    return made


def account_move(form: Mapping[str, str], _: Translate) -> AccountUpdate:
    errors: dict[str, str] = {}
    if not _text(form, "device_id"):
        errors["device_id"] = _("Choose the device to move the account to.")
    made = _validated(AccountUpdate, {"device_id": _text(form, "device_id")}, {"device_id": "device_id"}, _, errors)
    if errors:
        raise FormInvalid(errors)
    assert isinstance(made, AccountUpdate)
    return made
