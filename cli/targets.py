"""`fleet target preview` (a dry run of a target) and `fleet device tag`; `target_options`
builds the `target` of a REST body from the options every targeting command shares."""

from __future__ import annotations

from typing import Any, Optional

import typer
from pydantic import ValidationError

from cli.output import console, fail
from cli.rest import api
from schemas.targets import Target

app = typer.Typer(help="Which devices a target selects (a dry run before a job).")

DEVICE_HELP = "a device id; repeatable"
GROUP_HELP = "devices in this group; repeatable (any of them)"
TAGS_HELP = "a tag expression, e.g. 'platform=douyin and region in (sh, bj)'"
ACCOUNT_HELP = "the device holding this account; repeatable"
ALL_HELP = "every device"


def target_options(devices: list[str], groups: list[str], tags: Optional[str], accounts: list[str],
                   every: bool) -> dict[str, Any]:
    """The JSON `target` these options name, checked here so a mistake is one line, not a 422."""
    given: dict[str, Any] = {"device_ids": devices or None, "groups": groups or None, "tags": tags,
                             "accounts": accounts or None, "all": every}
    try:
        return Target.model_validate(given).model_dump(exclude_defaults=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'target'}: {e['msg']}" for e in exc.errors())
        fail(f"{problems} (name devices with --device, --group, --tags, --account or --all)")


@app.command("preview")
def preview(
    device: list[str] = typer.Option([], "--device", "-d", help=DEVICE_HELP),
    group: list[str] = typer.Option([], "--group", "-g", help=GROUP_HELP),
    tags: Optional[str] = typer.Option(None, "--tags", "-t", help=TAGS_HELP),
    account: list[str] = typer.Option([], "--account", "-a", help=ACCOUNT_HELP),
    every: bool = typer.Option(False, "--all", help=ALL_HELP),
    limit: int = typer.Option(100, min=1, max=10_000, help="device ids to print at most"),
) -> None:
    """Print the devices a target selects now; nothing is sent. Options given together narrow it."""
    body = target_options(device, group, tags, account, every)
    answer = api("POST", "/api/v1/targets/preview", json=body, params={"limit": limit})
    for device_id in answer["device_ids"]:
        print(device_id)
    more = " (list truncated: raise --limit)" if answer["truncated"] else ""
    console.print(f"{answer['count']} device(s), {answer['online']} online{more}")
    for field, what in (("unknown_device_ids", "never seen"), ("unknown_accounts", "not bound to a device"),
                        ("unknown_tag_keys", "no device has this tag")):
        if answer.get(field):
            console.print(f"[yellow]{what}:[/yellow] {', '.join(answer[field])}", highlight=False)


def tag_device(
    device_id: str = typer.Argument(..., help="the device"),
    tags: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="a tag to set (region=sh); repeatable"),
    remove: list[str] = typer.Option([], "--remove", "-r", help="a tag key to remove; repeatable"),
    replace: bool = typer.Option(False, "--replace", help="drop every tag not given here"),
) -> None:
    """Set tags on a device (--set key=value), remove some (--remove key); jobs select by them."""
    if replace and remove:
        fail("--replace already drops every tag not given; leave out --remove")
    pairs: dict[str, str] = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            fail(f"{item!r} is not key=value; write a tag like region=sh")
        pairs[key] = value
    if replace:
        answer = api("PUT", f"/api/v1/devices/{device_id}/tags", json={"tags": pairs})
    else:
        answer = api("PATCH", f"/api/v1/devices/{device_id}/tags", json={"set": pairs, "remove": remove})
    shown = " ".join(f"{key}={value}" for key, value in answer["tags"].items()) or "(no tags)"
    console.print(f"{answer['id']}: {shown}", highlight=False)
