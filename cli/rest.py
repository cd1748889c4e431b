"""The CLI's REST client: finds the controller (see `cli.local.api_url`), sends the API
token, and turns a failure into one error line. A request that carries an `Idempotency-Key`
is safe to send again, so it is, with the same key, when the controller could not be reached
or broke off before answering (docs/architecture.md#idempotent-task-creation)."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from cli.local import api_url, local_token, settings
from cli.output import err_console, fail
from config.settings import ENV_PREFIX
from config.tls import CaFileError, client_verify, untrusted_certificate
from schemas.api import IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_PATTERN

if TYPE_CHECKING:  # imported per request: `fleet device` (a long-lived daemon) never needs httpx
    import httpx


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail)


RETRY_STATUSES = frozenset({502, 503, 504})  # a proxy in front of several controllers lost the one it chose
ATTEMPTS = 5  # tries of a request with an Idempotency-Key, 0.5, 1, 2, 4 s apart
FIRST_PAUSE = 0.5


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def api(method: str, path: str, *, timeout: float = 30, idempotency_key: str | None = None, **kwargs: Any) -> Any:
    """One request to the controller; exits 1 with a clear line when it fails. With an
    `idempotency_key` it is tried up to ATTEMPTS times, always with that key, while the
    controller cannot be reached, breaks off or its proxy answers 502/503/504."""
    import httpx

    config = settings()
    base = api_url(config)
    token = local_token(config)
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    if idempotency_key is not None:
        if re.fullmatch(IDEMPOTENCY_KEY_PATTERN, idempotency_key) is None:
            fail(f"--idempotency-key {idempotency_key!r} is not a key: use 1 to 255 printable ASCII characters "
                 "without spaces, e.g. a UUID", code=2)
        headers[IDEMPOTENCY_KEY_HEADER] = idempotency_key
    try:
        verify = client_verify(config.api_ca_file)
    except CaFileError as exc:
        fail(str(exc), code=2)
    attempts = ATTEMPTS if idempotency_key is not None else 1
    for attempt in range(1, attempts + 1):
        pause = FIRST_PAUSE * 2 ** (attempt - 1)
        try:
            response = httpx.request(method, f"{base}{path}", timeout=timeout, headers=headers,
                                     verify=verify, **kwargs)
        except httpx.HTTPError as exc:
            untrusted = untrusted_certificate(exc, base)
            if untrusted is not None:
                fail(untrusted, code=1)  # trying again cannot help
            if attempt < attempts:
                _note_retry(f"the controller at {base} failed ({exc.__class__.__name__})", pause)
                continue
            fail(f"cannot reach the controller at {base} ({exc.__class__.__name__}). Is `fleet controller` "
                 f"(or `fleet up`) running? Point the CLI elsewhere with {ENV_PREFIX}API_URL.", code=1)
        if response.status_code in RETRY_STATUSES and attempt < attempts:
            _note_retry(f"the controller at {base} answered {response.status_code}", pause)
            continue
        break
    if response.status_code >= 400:
        fail(f"{response.status_code}: {_detail(response)}", code=1)
    return response.json() if response.content else None  # a 204 has no body


def _note_retry(what: str, pause: float) -> None:
    err_console.print(f"{what}; sending it again in {pause:g} s with the same {IDEMPOTENCY_KEY_HEADER}",
                      style="yellow", highlight=False, soft_wrap=True)
    time.sleep(pause)
