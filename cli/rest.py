"""The CLI's REST client: finds the controller (see `cli.local.api_url`), sends the API
token, and turns a failure into one error line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cli.local import api_url, local_token, settings
from cli.output import fail
from config.settings import ENV_PREFIX

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


def api(method: str, path: str, *, timeout: float = 30, **kwargs: Any) -> Any:
    """One request to the controller; exits 1 with a clear line when it fails."""
    import httpx

    config = settings()
    base = api_url(config)
    token = local_token(config)
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        response = httpx.request(method, f"{base}{path}", timeout=timeout, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the controller at {base} ({exc.__class__.__name__}). Is `fleet controller` "
             f"(or `fleet up`) running? Point the CLI elsewhere with {ENV_PREFIX}API_URL.", code=1)
    if response.status_code >= 400:
        fail(f"{response.status_code}: {_detail(response)}", code=1)
    return response.json()
