"""Which devices a job, a placement or a dry run addresses: the `target` of a REST body.

A target names devices by id, by group, by a tag expression, by the accounts they hold, or all
of them. Selectors given together narrow each other (a device must match every one);
`all: true` stands alone. The tag expression language (docs/architecture.md#targets):

    platform=douyin and region in (sh, bj)
    not (stage=canary) or group=eu
    has gpu and os!=windows

`key=value`, `key!=value`, `key in (a, b)`, `key not in (a, b)`, `has key`, joined with `and`,
`or`, `not` and parentheses. The key `group` matches the device's groups (as set on the
controller), every other key its tags.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, model_validator

from schemas.common import DeviceId, GroupName, StrictModel

TAG_KEY_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
TAG_VALUE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TAG_EXPRESSION_MAX = 1000
TARGET_LIST_MAX = 10_000

TagKey = Annotated[str, StringConstraints(pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, StringConstraints(pattern=TAG_VALUE_PATTERN)]
GROUP_TAG_KEY = "group"  # in an expression: the device's groups, not a tag (and not a valid tag key)


def is_tag_key(key: str) -> bool:
    return key != GROUP_TAG_KEY and re.fullmatch(TAG_KEY_PATTERN, key) is not None


class Target(StrictModel):
    """A set of devices; see the module docstring."""

    device_ids: list[DeviceId] | None = Field(
        None, min_length=1, max_length=TARGET_LIST_MAX, description="these devices"
    )
    groups: list[GroupName] | None = Field(
        None, min_length=1, max_length=100, description="devices in any of these groups"
    )
    tags: str | None = Field(
        None, min_length=1, max_length=TAG_EXPRESSION_MAX,
        description="a tag expression, e.g. `platform=douyin and region in (sh, bj)`",
    )
    accounts: list[str] | None = Field(
        None, min_length=1, max_length=TARGET_LIST_MAX, description="the devices holding these accounts"
    )
    all: bool = Field(False, description="every device; give no other selector with it")

    @model_validator(mode="after")
    def _some_selector(self) -> "Target":
        given = [name for name in ("device_ids", "groups", "tags", "accounts") if getattr(self, name) is not None]
        if self.all and given:
            raise ValueError(f"`all: true` selects every device; leave out {', '.join(given)} or set all to false")
        if not self.all and not given:
            raise ValueError("name the devices: give device_ids, groups, tags, accounts, or all: true")
        return self


class TargetPreview(BaseModel):
    """`POST /api/v1/targets/preview`: the devices a target selects now (a dry run)."""

    count: int
    online: int
    device_ids: list[str] = Field(description="the first `limit` of them, by id")
    truncated: bool
