"""The REST front door against a real controller process: a chunked body (no Content-Length)
far past FLEET_MAX_REQUEST_BYTES is refused (401 without a token, 413 with one) while the
controller's memory stays flat; API tokens expire."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.harness import Controller, Process, start_controller_on_embedded_broker, wait_for

pytestmark = pytest.mark.integration

CHUNK = 1 << 20
OVERSIZE_CHUNKS = 300  # 300 MiB, the size that took the controller from 151 MiB to 1.3 GB


@pytest.fixture
def rest_controller(tmp_path: Path, _processes: list[Process]) -> Controller:
    """A controller on the embedded broker: these probes are about REST, not the broker."""
    return start_controller_on_embedded_broker(tmp_path, _processes)


def _chunks() -> Iterator[bytes]:
    block = b"x" * CHUNK
    for _ in range(OVERSIZE_CHUNKS):
        yield block


def _rss_mib(controller: Controller) -> float:
    assert controller.process.popen is not None
    process = psutil.Process(controller.process.popen.pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


@pytest.mark.parametrize("path", ["/api/v1/accounts", "/api/v1/tasks", "/api/v1/files?name=big.bin"])
def test_chunked_oversize_body_is_refused_without_growing_memory(rest_controller: Controller, path: str) -> None:
    url = f"http://127.0.0.1:{rest_controller.port}{path}"
    before = _rss_mib(rest_controller)
    answers: dict[str, int] = {}
    for who, headers in (("no token", {}), ("bad token", {"Authorization": "Bearer flt_nope_nope"}),
                         ("admin token", {"Authorization": f"Bearer {rest_controller.admin_token}"})):
        response = httpx.post(url, content=_chunks(), headers=headers, timeout=60)
        assert "content-length" not in response.request.headers  # really chunked
        answers[who] = response.status_code
        peak = _rss_mib(rest_controller)
        print(f"{path} {who}: {response.status_code} {response.text[:70]!r}; "
              f"controller RSS {before:.0f} MiB before, {peak:.0f} MiB after 300 MiB sent")
        assert peak - before < 50, f"controller grew by {peak - before:.0f} MiB"
    assert answers["no token"] == 401 and answers["bad token"] == 401
    # /files has its own, larger limit (8 GiB by default): 300 MiB is a legal upload there.
    assert answers["admin token"] == (201 if path.startswith("/api/v1/files") else 413)


def test_upload_past_its_own_limit_is_refused_streaming(tmp_path: Path, _processes: list[Process]) -> None:
    controller = start_controller_on_embedded_broker(tmp_path, _processes, max_upload_bytes=str(100 * CHUNK))
    before = _rss_mib(controller)
    response = controller.api.post("/api/v1/files", params={"name": "big.bin"}, content=_chunks(), timeout=60)
    after = _rss_mib(controller)
    print(f"upload of 300 MiB against a 100 MiB limit: {response.status_code}; RSS {before:.0f} -> {after:.0f} MiB")
    assert response.status_code == 413, response.text
    assert after - before < 50
    assert not list((controller.data_dir / "files").glob("*"))  # nothing left behind


def test_token_expiry(rest_controller: Controller) -> None:
    api = rest_controller.api
    refused = api.post("/api/v1/tokens", json={"name": "x", "scope": "read", "expires": "30 days"})
    assert refused.status_code == 422
    created = api.post("/api/v1/tokens", json={"name": "short", "scope": "read", "expires": "2s"})
    assert created.status_code == 201, created.text
    assert created.json()["expires_at"] is not None
    lasting = api.post("/api/v1/tokens", json={"name": "lasting", "scope": "read"}).json()
    assert lasting["expires_at"] is None
    url = f"http://127.0.0.1:{rest_controller.port}/api/v1/devices"

    def status(token: str) -> httpx.Response:
        return httpx.get(url, headers={"Authorization": f"Bearer {token}"})

    assert status(created.json()["token"]).status_code == 200
    expired = wait_for(lambda: (r := status(created.json()["token"])).status_code == 401 and r, 10, 0.2, "expiry")
    assert "expired" in expired.json()["detail"]
    assert status(lasting["token"]).status_code == 200
    listed = {t["id"]: t for t in api.get("/api/v1/tokens").json()}
    assert listed[created.json()["id"]]["expires_at"] == created.json()["expires_at"]
