"""Which devices a job, a placement or a dry run addresses: the `target` of a REST body.

A target names devices by id, by group, by a tag expression, by the accounts they hold, or all
of them. Selectors given together narrow each other (a device must match every one);
`all: true` stands alone. Tag expressions
(`schemas.tag_expressions`, docs/architecture.md#targets):

    platform=douyin and region in (sh, bj)
    not (stage=canary) or group=eu
    has gpu and os!=windows
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from schemas.common import DeviceId, GroupName, StrictModel
from schemas.tag_expressions import GROUP_KEY, KEYWORDS, parse_tag_expression

TAG_KEY_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
# Any text but quotes, commas, brackets, = and !, not starting or ending with a space (上海 is fine).
TAG_VALUE_PATTERN = r"^[^\s'\"(),=!](?:[^\x00-\x1f'\"(),=!]{0,126}[^\s'\"(),=!])?$"
TAG_EXPRESSION_MAX = 1000
TARGET_LIST_MAX = 10_000
TAGS_PER_DEVICE_MAX = 50


def _tag_key(key: str) -> str:
    if key == GROUP_KEY or key in KEYWORDS:
        raise ValueError(f"{key!r} cannot be a tag key: it is a word of tag expressions (set groups with their own API)")
    return key


def _expression(text: str) -> str:
    parse_tag_expression(text)  # ValueError saying where it is wrong
    return text


TagKey = Annotated[str, StringConstraints(pattern=TAG_KEY_PATTERN), AfterValidator(_tag_key)]
TagValue = Annotated[str, StringConstraints(pattern=TAG_VALUE_PATTERN)]
TagExpressionText = Annotated[str, StringConstraints(min_length=1, max_length=TAG_EXPRESSION_MAX), AfterValidator(_expression)]


class Target(StrictModel):
    """A set of devices; see the module docstring."""

    device_ids: list[DeviceId] | None = Field(
        None, min_length=1, max_length=TARGET_LIST_MAX, description="these devices"
    )
    groups: list[GroupName] | None = Field(
        None, min_length=1, max_length=100, description="devices in any of these groups"
    )
    tags: TagExpressionText | None = Field(
        None, description="a tag expression, e.g. `platform=douyin and region in (sh, bj)`"
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
    unknown_device_ids: list[str] = Field(default_factory=list, description="named but never seen")
    unknown_accounts: list[str] = Field(default_factory=list, description="named but not bound to any device")
    unknown_tag_keys: list[str] = Field(
        default_factory=list, description="keys the expression tests that no device has (a typo?)"
    )


class TagsReplace(StrictModel):
    """`PUT /api/v1/devices/{id}/tags`: the device's tags become exactly these."""

    tags: dict[TagKey, TagValue] = Field(max_length=TAGS_PER_DEVICE_MAX)


class TagsChange(StrictModel):
    """`PATCH /api/v1/devices/{id}/tags`: set some tags, remove others, keep the rest."""

    set: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=TAGS_PER_DEVICE_MAX)
    remove: list[TagKey] = Field(default_factory=list, max_length=TAGS_PER_DEVICE_MAX)

    @model_validator(mode="after")
    def _not_both(self) -> "TagsChange":
        both = sorted(set(self.set) & set(self.remove))
        if both:
            raise ValueError(f"{', '.join(both)}: both set and removed; give each key once")
        return self
