"""`fleet file …`: files (videos, covers) devices download for upload tasks."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import console
from cli.progress import upload_chunks
from cli.rest import api

app = typer.Typer(help="Files (videos, covers) devices download for upload tasks.", no_args_is_help=True)


@app.command("upload")
def file_upload(path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Upload a file to the controller, showing bytes sent; prints the url, size and sha256
    for an upload task."""
    with path.open("rb") as body:
        stored = api("POST", "/api/v1/files", params={"name": path.name}, content=upload_chunks(path, body),
                     headers={"content-type": "application/octet-stream", "content-length": str(path.stat().st_size)},
                     timeout=300)
    console.print_json(data={k: stored[k] for k in ("url", "size", "sha256")})
