"""`fleet vault …`: the operator's session vault key, which devices use to seal account
sessions for the controller to keep (docs/architecture.md#the-session-vault)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import console, fail

app = typer.Typer(help="The vault key that seals account session backups.", no_args_is_help=True)


@app.command("keygen")
def keygen(out: Path = typer.Option(..., "--out", help="the key file to write (never overwritten)")) -> None:
    """Write a new random 256-bit vault key to a file readable by you only, and print its
    fingerprint. Copy the file to each device and set FLEET_VAULT_KEY_FILE there; keep a copy
    safe: backups made with it cannot be opened without it. Never give it to the controller."""
    from device.vault import VaultError, generate_key, write_key_file
    from schemas.vault import fingerprint

    key = generate_key()
    try:
        write_key_file(out, key)
    except VaultError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out} cannot be written ({type(exc).__name__}: {exc.strerror or exc})")
    console.print(f"vault key written to {out} (fingerprint {fingerprint(key)}); on each device set "
                  f"FLEET_VAULT_KEY_FILE={out.name} to its copy")


@app.command("fingerprint")
def show_fingerprint(key_file: Path = typer.Argument(..., help="a vault key file")) -> None:
    """Print a key file's fingerprint (what backups and errors name it by)."""
    from device.vault import VaultError, load_key
    from schemas.vault import fingerprint

    try:
        console.print(fingerprint(load_key(key_file)))
    except VaultError as exc:
        fail(str(exc))
