"""Targets end to end: tags set through REST and `fleet device tag` on devices that connected
(`fleet simulate`'s devices through a real broker), then `POST /api/v1/targets/preview`,
`fleet target preview` and `GET /api/v1/devices?tags=` select exactly the devices the test
computes from the tags it set; bad expressions and tags get a readable 422 / exit 2."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.tag_expressions import parse_tag_expression
from tests.harness import (
    Controller,
    Process,
    SimulatorThread,
    base_env,
    fleet_argv,
    start_controller_on_embedded_broker,
    wait_for,
)

pytestmark = pytest.mark.integration

DEVICES = 8
REGIONS = ["sh", "bj", "gz", "上海"]
EXPRESSIONS = [
    "platform=douyin and region in (sh, bj)",
    "region not in (sh, bj) or has canary",
    "not (platform=douyin) and has region",
    "region='上海' or group=unknown",
    "has canary",
]


class Fleet:
    def __init__(self, controller: Controller, sim: SimulatorThread, work: Path) -> None:
        self.controller, self.sim, self.work = controller, sim, work
        self.ids: list[str] = sim.fleet.ids
        self.env = base_env(api_url=f"http://127.0.0.1:{controller.port}", api_token=controller.admin_token,
                            data_dir=str(work / "cli"))

    def fleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(fleet_argv(*args), env=self.env, cwd=self.work, capture_output=True, text=True,
                              timeout=60)

    def tags(self) -> dict[str, dict[str, str]]:
        return {device_id: self.controller.device(device_id)["tags"] for device_id in self.ids}  # type: ignore[index]

    def preview(self, **target: Any) -> dict[str, Any]:
        answer = self.controller.api.post("/api/v1/targets/preview", json=target)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("targets")
    processes: list[Process] = []
    sim: SimulatorThread | None = None
    try:
        # The devices declare "office"; this controller accepts declared groups as memberships.
        controller = start_controller_on_embedded_broker(work, processes, accept_declared_groups="true")
        sim = SimulatorThread(controller.broker.url, DEVICES, prefix="tgt", groups=["office"], seed=5)
        sim.call(sim.fleet.start())
        assert sim.call(sim.fleet.wait_online(60)), sim.fleet.counters.snapshot()
        for device_id in sim.fleet.ids:
            controller.wait_device(device_id, "online")
            wait_for(lambda d=device_id: controller.device(d)["groups"] == ["office"], 15,  # type: ignore[index]
                     what=f"{device_id}'s declared group adopted")
        yield Fleet(controller, sim, work)
    finally:
        if sim is not None:
            sim.close()
        for process in processes:
            process.kill()


def test_tag_expressions_select_exactly_the_matching_devices(fleet: Fleet) -> None:
    for n, device_id in enumerate(fleet.ids):
        pairs = [f"region={REGIONS[n % len(REGIONS)]}", f"platform={'douyin' if n % 2 else 'kuaishou'}"]
        if n % 3 == 0:
            pairs.append("canary=yes")
        done = fleet.fleet("device", "tag", device_id, *(arg for pair in pairs for arg in ("--set", pair)))
        assert done.returncode == 0, done.stderr
    tags = fleet.tags()
    assert tags[fleet.ids[3]] == {"canary": "yes", "platform": "douyin", "region": "上海"}

    for text in EXPRESSIONS:
        expression = parse_tag_expression(text)
        expected = [d for d in fleet.ids if expression.matches(["office"], tags[d])]
        answer = fleet.preview(tags=text)
        assert answer["device_ids"] == expected and answer["count"] == len(expected), text
        assert answer["online"] == len(expected)
        listed = fleet.controller.api.get("/api/v1/devices", params={"tags": text, "limit": 500}).json()
        assert [item["id"] for item in listed["items"]] == expected, text
        printed = fleet.fleet("target", "preview", "--tags", text)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.splitlines()[: len(expected)] == expected
        assert f"{len(expected)} device(s)" in printed.stdout
    # The hand-written check above is itself checked: douyin devices in sh or bj are ids 1 and 5.
    assert fleet.preview(tags=EXPRESSIONS[0])["device_ids"] == [fleet.ids[1], fleet.ids[5]]


def test_selectors_narrow_each_other_and_name_what_matches_nothing(fleet: Fleet) -> None:
    first, second, third = fleet.ids[:3]
    for name, device_id in (("acct-a", first), ("acct-b", second), ("acct-c", second)):
        made = fleet.controller.api.post("/api/v1/accounts", json={"name": name, "platform": "douyin",
                                                                   "device_id": device_id})
        assert made.status_code == 201, made.text
    answer = fleet.preview(accounts=["acct-b", "acct-a", "acct-gone"])
    assert answer["device_ids"] == [first, second] and answer["unknown_accounts"] == ["acct-gone"]
    answer = fleet.preview(device_ids=[first, second, third, "tgt-never"], tags="has canary")
    assert answer["device_ids"] == [d for d in (first, second, third) if "canary" in fleet.tags()[d]]
    assert answer["unknown_device_ids"] == ["tgt-never"]
    assert fleet.preview(groups=["office"], tags="regoin=sh")["unknown_tag_keys"] == ["regoin"]
    assert fleet.preview(all=True)["count"] == DEVICES
    assert fleet.preview(groups=["elsewhere"])["count"] == 0


def test_tags_change_and_bad_input_is_answered_not_fatal(fleet: Fleet) -> None:
    device_id = fleet.ids[0]
    changed = fleet.controller.api.patch(f"/api/v1/devices/{device_id}/tags",
                                         json={"set": {"stage": "beta"}, "remove": ["canary"]})
    assert changed.status_code == 200, changed.text
    assert "canary" not in changed.json()["tags"] and changed.json()["tags"]["stage"] == "beta"
    replaced = fleet.fleet("device", "tag", device_id, "-s", "only=this", "--replace")
    assert replaced.returncode == 0 and fleet.controller.device(device_id)["tags"] == {"only": "this"}  # type: ignore[index]

    bad = fleet.controller.api.post("/api/v1/targets/preview", json={"tags": "platform=douyin and"})
    assert bad.status_code == 422 and "column 20" in bad.text and "platform=douyin and region in" in bad.text
    for body, words in (({}, "name the devices"), ({"all": True, "groups": ["x"]}, "leave out groups")):
        refused = fleet.controller.api.post("/api/v1/targets/preview", json=body)
        assert refused.status_code == 422 and words in refused.text, refused.text
    wrong_key = fleet.controller.api.put(f"/api/v1/devices/{device_id}/tags", json={"tags": {"group": "x"}})
    assert wrong_key.status_code == 422 and "cannot be a tag key" in wrong_key.text
    unknown = fleet.controller.api.put("/api/v1/devices/tgt-never/tags", json={"tags": {"a": "b"}})
    assert unknown.status_code == 404 and "never connected" in unknown.text

    for args, words in ((("target", "preview", "--tags", "a=="), "column"),
                        (("target", "preview"), "name the devices"),
                        (("device", "tag", device_id, "--set", "novalue"), "is not key=value")):
        run = fleet.fleet(*args)
        assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
    assert fleet.controller.device(device_id)["tags"] == {"only": "this"}  # type: ignore[index]
