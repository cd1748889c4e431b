"""`fleet release …` (keygen, publish, list, show, rollout) and `fleet device update`: remote
update of the device daemon with releases signed by the operator's key
(docs/architecture.md#remote-update)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cli.jobs import _rollout, _target, parse_threshold
from cli.output import console
from cli.progress import upload_chunks
from cli.rest import api

app = typer.Typer(help="Signed releases of the device daemon: make the key, publish, roll out.", no_args_is_help=True)

KEY_HELP = "the release private key (PEM) `fleet release keygen` wrote"


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


@app.command("keygen")
def release_keygen(
    out: Path = typer.Option(Path("release.key"), "--out", "-o", help="where the private key goes (PEM, mode 600)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing key file"),
) -> None:
    """Make the release key pair: the private key stays with the operator (sign releases with it),
    the public key goes on the controller and every device as FLEET_UPDATE_PUBLIC_KEY."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from schemas.signing import public_key_text

    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; give another --out, or --force to replace it (releases signed with "
                                 "the old key are then refused by devices given the new public key)")
    key = Ed25519PrivateKey.generate()
    out.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    out.chmod(0o600)
    public = public_key_text(key.public_key())
    out.with_suffix(".pub").write_text(public + "\n", encoding="utf-8")
    console.print(f"private key: {out} (keep it off the controller and the devices)", highlight=False)
    console.print(f"public key: {out.with_suffix('.pub')}; on the controller and on each device set:", highlight=False)
    print(f"FLEET_UPDATE_PUBLIC_KEY={public}")


def sign_release(key_file: Path, version: str, sha256: str, file_name: str) -> str:
    """The release signature (hex) of a wheel, made with the private key in `key_file`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from schemas.releases import release_message

    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise typer.BadParameter(f"--key {key_file}: not a readable unencrypted PEM private key ({type(exc).__name__})")
    if not isinstance(key, Ed25519PrivateKey):
        raise typer.BadParameter(f"--key {key_file}: not an Ed25519 key (make one with `fleet release keygen`)")
    return key.sign(release_message(version, sha256, file_name)).hex()


@app.command("publish")
def release_publish(
    wheel: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="the wheel, e.g. dist/mqtt_fleet-0.2.0-py3-none-any.whl"),
    key: Path = typer.Option(..., "--key", exists=True, dir_okay=False, readable=True, help=KEY_HELP),
) -> None:
    """Sign a wheel (its version, sha256 and file name) and upload it to the controller, which
    checks the signature against its FLEET_UPDATE_PUBLIC_KEY."""
    from schemas.releases import wheel_version

    version = wheel_version(wheel.name)
    if version is None:
        raise typer.BadParameter(f"{wheel.name} is not a wheel file name (<name>-<version>-<py>-<abi>-<platform>.whl)")
    signature = sign_release(key, version, _sha256(wheel), wheel.name)
    with wheel.open("rb") as body:
        release = api("POST", "/api/v1/releases", params={"version": version, "file_name": wheel.name, "signature": signature},
                      content=upload_chunks(wheel, body), timeout=300,
                      headers={"content-type": "application/octet-stream", "content-length": str(wheel.stat().st_size)})
    console.print(f"release {release['version']} published ({release['size']} bytes, sha256 {release['sha256']}); "
                  f"roll it out with: fleet release rollout {release['version']} --device ID | --group G | --all",
                  highlight=False)


@app.command("list")
def release_list() -> None:
    """List the published releases, newest first."""
    table = Table("version", "file", "size", "sha256", "published")
    for release in api("GET", "/api/v1/releases"):
        table.add_row(release["version"], release["file_name"], str(release["size"]), release["sha256"][:16] + "…",
                      str(release["created_at"]))
    console.print(table)


@app.command("show")
def release_show(version: str) -> None:
    """Show a release and its `update` task params (to update a device by hand)."""
    console.print_json(data=api("GET", f"/api/v1/releases/{version}"))


def rollout(version: str, target: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = api("POST", f"/api/v1/releases/{version}/rollout", json={"target": target, **body})
    return job


@app.command("rollout")
def release_rollout(
    version: str = typer.Argument(..., help="the release to install"),
    tags: Optional[str] = typer.Option(None, "--target-tags", metavar="EXPR", help="a tag expression"),
    group: list[str] = typer.Option([], "--group", help="devices in this group; repeatable"),
    device: list[str] = typer.Option([], "--device", help="this device; repeatable"),
    everyone: bool = typer.Option(False, "--all", help="every device"),
    rate: Optional[str] = typer.Option(None, help="at most this many devices per minute, e.g. 10/min"),
    batch: Optional[int] = typer.Option(None, min=1, help="devices per batch"),
    pause: float = typer.Option(0.0, min=0, help="seconds between batches (with --batch)"),
    wait: bool = typer.Option(False, "--wait", help="count --pause from the end of a batch's last update"),
    abort_failed: Optional[str] = typer.Option(None, metavar="N|P%", help="stop when this many (or this share) failed"),
    drain_timeout: Optional[float] = typer.Option(None, min=0, help="seconds running tasks get to finish first"),
    as_json: bool = typer.Option(False, "--json", help="print the created job as JSON"),
) -> None:
    """Update a target's devices to a release: a job of `update` runs (follow it with `fleet job show`)."""
    body: dict[str, Any] = {}
    plan = _rollout(rate, batch, pause, wait, None)
    if plan is not None:
        body["rollout"] = plan
    if abort_failed is not None:
        body["abort"] = [{"on": "failed_or_timed_out", **parse_threshold(abort_failed, "--abort-failed")}]
    if drain_timeout is not None:
        body["drain_timeout"] = drain_timeout
    job = rollout(version, _target(tags, group, device, [], everyone), body)
    if as_json:
        print(json.dumps(job))
        return
    console.print(f"job [bold]{job['id']}[/bold] updates to {version}; follow it with: fleet job show {job['id']}",
                  highlight=False)


def device_update(
    device_id: str = typer.Argument(..., help="the device to update"),
    version: str = typer.Option(..., "--version", help="the release to install (`fleet release list`)"),
    drain_timeout: Optional[float] = typer.Option(None, min=0, help="seconds running tasks get to finish first"),
) -> None:
    """Update one device to a published release (its daemon must run as `fleet device --managed`)."""
    body = {"drain_timeout": drain_timeout} if drain_timeout is not None else {}
    job = rollout(version, {"device_ids": [device_id]}, body)
    console.print(f"updating {device_id} to {version}: job {job['id']}; follow it with: fleet job runs {job['id']}",
                  highlight=False)
