"""`fleet token …`: REST API tokens. `create` writes to the controller's database through its
services (it works before any token exists); `list` and `revoke` go through REST."""

from __future__ import annotations

import typer
from rich.table import Table

from cli.local import settings
from cli.output import console, fail
from cli.rest import api
from schemas.api import parse_duration
from schemas.common import utcnow

app = typer.Typer(help="REST API tokens.", no_args_is_help=True)


@app.command("create")
def token_create(
    name: str = typer.Option(..., help="who or what uses it"),
    scope: str = typer.Option("operate", help="read, operate or admin"),
    expires: str | None = typer.Option(None, help="lifetime, e.g. 30d, 12h, 90m, 2w (default: never expires)"),
) -> None:
    """Create an API token in the controller's database (FLEET_DATABASE_URL); prints it once."""
    if scope not in ("read", "operate", "admin"):
        raise typer.BadParameter(f"--scope must be read, operate or admin, not {scope!r}")
    try:
        expires_at = utcnow() + parse_duration(expires) if expires else None
    except ValueError as exc:
        raise typer.BadParameter(f"--expires: {exc}") from None
    from controller.db import DatabaseSetupError
    from controller.offline import create_api_token

    try:
        token, secret = create_api_token(settings(), name, scope, expires_at)
    except DatabaseSetupError as exc:
        fail(str(exc))
    until = f", expires {expires_at.isoformat(timespec='seconds')}" if expires_at else ""
    console.print(f"token {token.id} ({scope}{until}) for {name}:")
    console.print(secret, highlight=False, soft_wrap=True)
    console.print("send it as 'Authorization: Bearer <token>', or set FLEET_API_TOKEN for the CLI; it is not shown again")


@app.command("list")
def token_list() -> None:
    """List API tokens (never their secrets)."""
    table = Table("id", "name", "scope", "created", "last used", "expires", "revoked")
    for item in api("GET", "/api/v1/tokens"):
        table.add_row(item["id"], item["name"], item["scope"], item["created_at"], str(item["last_used_at"] or ""),
                      str(item.get("expires_at") or ""), str(item["revoked_at"] or ""))
    console.print(table)


@app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke an API token; requests with it get 401 from then on."""
    api("DELETE", f"/api/v1/tokens/{token_id}")
    console.print(f"token {token_id} revoked")
