"""Live progress for long commands: a task until it is final (`fleet task send --wait`) and a
file upload. On a terminal a Rich progress bar; otherwise (a pipe, a log) plain lines, one per
change, so a script or CI log still sees what happens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from cli.output import console
from cli.rest import api
from schemas.events import FINAL_STATUSES

CHUNK = 256 * 1024
POLL_SECONDS = 0.2


def _is_done(task: dict[str, Any]) -> bool:
    return task["status"] in FINAL_STATUSES and not task.get("retry_at")


def _operator_prompt(task_id: str, details: dict[str, Any]) -> str | None:
    """What the operator must do now (a QR code to scan, a code to send), if anything."""
    waiting = details.get("waiting_for")
    if waiting == "scan":
        return f"scan the QR code (or open this link): {details.get('scan_url', 'see the task details')}"
    if waiting == "code":
        wrong = "that code was wrong; " if details.get("wrong_code") else ""
        return f"{wrong}send the code with:  fleet task input {task_id} <code>"
    return None


def _latest_progress(task: dict[str, Any]) -> tuple[float | None, str]:
    progress, message = None, ""
    for event in task.get("events", []):
        if event.get("applied", True):
            progress = event["progress"] if event.get("progress") is not None else progress
            message = event.get("message") or message
    return progress, message


def _plain_lines(task: dict[str, Any], seen: int, last_status: str | None) -> None:
    """Without a terminal: a line per status change and per new progress or message event."""
    if task["status"] != last_status:
        console.print(f"{task['id']}: {task['status']}", highlight=False)
    for event in task.get("events", [])[seen:]:
        if event.get("progress") is not None or event.get("message"):
            percent = f" {event['progress']}%" if event.get("progress") is not None else ""
            console.print(f"{task['id']}: {event['event']}{percent} {event.get('message') or ''}".rstrip(),
                          highlight=False)


def wait_final(task_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the task is final (and no retry is pending) or `timeout` passes, showing its
    status, progress and messages as events arrive, and what the operator must do."""
    deadline = time.monotonic() + timeout
    told: set[str] = set()
    seen, status = 0, None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[message]}"), TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        row = bar.add_task(task_id, total=100, message="")
        while True:
            task = api("GET", f"/api/v1/tasks/{task_id}")
            if not console.is_terminal:
                _plain_lines(task, seen, status)
            seen, status = len(task.get("events", [])), task["status"]
            progress, message = _latest_progress(task)
            bar.update(row, description=f"{task['type']} {task['status']}", message=message,
                       completed=100 if task["status"] == "succeeded" else (progress or 0))
            prompt = _operator_prompt(task_id, task.get("details") or {})
            if prompt and prompt not in told:
                told.add(prompt)
                bar.console.print(prompt, highlight=False)
            if _is_done(task) or time.monotonic() > deadline:
                return task
            time.sleep(POLL_SECONDS)


class _PlainReporter:
    """Upload progress as a line every 10 % when output is not a terminal."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total, self.next_step = name, total, 10

    def advance(self, sent: int) -> None:
        percent = 100 * sent // self.total if self.total else 100
        while percent >= self.next_step and self.next_step <= 100:
            console.print(f"uploading {self.name}: {sent} of {self.total} bytes ({self.next_step}%)", highlight=False)
            self.next_step += 10


def upload_chunks(path: Path, body: BinaryIO) -> Iterator[bytes]:
    """The file's bytes for httpx, reporting how many were sent."""
    total = path.stat().st_size
    if console.is_terminal:
        with Progress(TextColumn("uploading {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, transient=True) as bar:
            row: TaskID = bar.add_task(path.name, total=total)
            while chunk := body.read(CHUNK):
                yield chunk
                bar.advance(row, len(chunk))
        return
    reporter, sent = _PlainReporter(path.name, total), 0
    while chunk := body.read(CHUNK):
        yield chunk
        sent += len(chunk)
        reporter.advance(sent)
