"""`fleet identity add`: broker logins of the controller and operators; and the provisioning
`fleet device add` shares. Written through the controller's services to its database."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from cli.local import settings
from cli.output import console, fail

app = typer.Typer(help="Broker logins of the controller and operators.", no_args_is_help=True)


def provision(name: str, role: str, groups: list[str]) -> None:
    """Create a broker identity in the controller's database and apply the broker files."""
    try:
        from controller.db import DatabaseSetupError
        from controller.local_setup import broker_files
        from controller.offline import provision_identity
        from controller.services.errors import ServiceError
    except ImportError:  # the device-only build (deploy/device-build) has no controller
        fail("this program has no controller: provision on the controller's host (`fleet device add`) "
             "or through its REST API (POST /api/v1/identities)")
    from schemas.api import IdentityCreate

    try:
        body = IdentityCreate(name=name, role=role, groups=groups)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors(include_input=False)))
    config = settings()
    if config.broker_password_file is None:
        password_file, acl_file = broker_files(config.data_dir)
        if password_file.exists():  # the embedded broker of `fleet up` in this data dir
            config = settings(broker_password_file=password_file, broker_acl_file=acl_file)
    try:
        identity, secret, outcome = provision_identity(config, body)
    except DatabaseSetupError as exc:
        fail(str(exc))
    except ServiceError as exc:
        fail(exc.detail, code=1)
    console.print(f"{identity.role} {identity.name} provisioned; broker files: {outcome}")
    console.print(f"its MQTT password (shown once): {secret}", highlight=False, soft_wrap=True)
    console.print(f"e.g. FLEET_MQTT_URL=mqtt://{identity.name}:<password>@<broker host>:<port>", highlight=False)


@app.command("add")
def identity_add(
    name: str = typer.Argument(..., help="MQTT user name"),
    role: str = typer.Option(..., help="controller or operator (devices: fleet device add)"),
) -> None:
    """Provision the controller's or an operator's broker login (operators may publish tasks)."""
    if role not in ("controller", "operator"):
        raise typer.BadParameter(f"--role must be controller or operator, not {role!r}")
    provision(name, role, [])
