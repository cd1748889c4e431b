"""schemathesis drives the running controller's whole OpenAPI document: no 5xx, no token in the log."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Process, start_controller_on_embedded_broker

pytestmark = pytest.mark.integration


def test_openapi_fuzz_against_the_running_controller(tmp_path: Path, _processes: list[Process]) -> None:
    """schemathesis, every operation of the OpenAPI document, with an admin token: no 5xx."""
    controller = start_controller_on_embedded_broker(tmp_path, _processes)
    binary = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    run = subprocess.run(
        [binary, "run", f"http://127.0.0.1:{controller.port}/openapi.json", "--checks", "not_a_server_error",
         "-H", f"Authorization: Bearer {controller.admin_token}", "--max-examples", "40", "--seed", "7",
         "--workers", "1", "--no-color",
         "--exclude-path", "/api/v1/events/stream"],  # an endless stream: test_live_stream.py covers it
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its report files go there
    )
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary + run.stderr[-2000:]
    cases = re.search(r"(\d+) generated", summary)
    assert cases and int(cases.group(1)) > 100, summary
    print(f"\nschemathesis: {cases.group(0)}\n{summary[-800:]}")
    assert controller.admin_token not in controller.process.log_path.read_text()
