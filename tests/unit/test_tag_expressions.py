"""The tag expression language of targets (`schemas.tag_expressions`): what each form selects,
how the operators bind, and the message a mistake gets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.tag_expressions import parse_tag_expression
from schemas.targets import TagsChange, TagsReplace, Target

DOUYIN_SH = {"platform": "douyin", "region": "sh"}
DOUYIN_GZ = {"platform": "douyin", "region": "gz"}
BARE: dict[str, str] = {}


@pytest.mark.parametrize(("text", "groups", "tags", "expected"), [
    ("platform=douyin and region in (sh, bj)", [], DOUYIN_SH, True),
    ("platform=douyin and region in (sh, bj)", [], DOUYIN_GZ, False),
    ("region not in (sh, bj)", [], DOUYIN_GZ, True),
    ("region not in (sh, bj)", [], BARE, True),  # a device without the key matches `not in` and `!=`
    ("region!=sh", [], BARE, True),
    ("region=sh", [], BARE, False),
    ("has region", [], DOUYIN_GZ, True),
    ("has region", [], BARE, False),
    ("group=eu", ["eu", "asia"], BARE, True),
    ("group in (us, asia)", ["eu", "asia"], BARE, True),
    ("group!=eu", ["eu"], BARE, False),
    ("has group", [], BARE, False),
    # not > and > or: `a or b and c` is `a or (b and c)`
    ("region=gz or platform=kuaishou and region=sh", [], DOUYIN_GZ, True),
    ("(region=gz or platform=kuaishou) and region=sh", [], DOUYIN_GZ, False),
    ("not region=sh and platform=douyin", [], DOUYIN_GZ, True),
    ("not (region=gz and platform=douyin)", [], DOUYIN_GZ, False),
    ("REGION=sh".lower() + " AND platform=douyin", [], DOUYIN_SH, True),  # keywords in any case
    ("office='Shanghai office'", [], {"office": "Shanghai office"}, True),
    ("region in (上海, 北京)", [], {"region": "北京"}, True),
])
def test_an_expression_selects_what_it_says(text: str, groups: list[str], tags: dict[str, str], expected: bool) -> None:
    assert parse_tag_expression(text).matches(groups, tags) is expected


def test_the_keys_it_names_leave_out_group_and_values() -> None:
    expression = parse_tag_expression("platform=douyin and region in (sh, bj) or has gpu or group=eu")
    assert expression.keys == {"platform", "region", "gpu"}


@pytest.mark.parametrize(("text", "column"), [
    ("platform=", 1), ("x=1 and", 8), ("a = b c", 7), ("(a=1", 5), ("Platform=x", 1), ("a==b", 1), ("and=1", 1),
])
def test_a_mistake_says_where_and_shows_an_example(text: str, column: int) -> None:
    with pytest.raises(ValueError, match=rf"at column {column}: .*for example `platform=douyin and region in") as caught:
        parse_tag_expression(text)
    assert "Traceback" not in str(caught.value)


def test_a_target_needs_one_selector_and_all_stands_alone() -> None:
    assert Target(tags="has gpu", groups=["eu"]).groups == ["eu"]
    with pytest.raises(ValidationError, match="name the devices"):
        Target()
    with pytest.raises(ValidationError, match="leave out device_ids"):
        Target(all=True, device_ids=["a"])
    with pytest.raises(ValidationError, match="not valid at column"):
        Target(tags="region in sh")


def test_tag_keys_and_values_are_checked() -> None:
    assert TagsReplace(tags={"region": "上海", "office": "Shanghai office"}).tags["region"] == "上海"
    for key in ("group", "and", "Region", "1a"):
        with pytest.raises(ValidationError):
            TagsReplace(tags={key: "x"})
    for value in ("", " x", "a,b", "a=b", "it's"):
        with pytest.raises(ValidationError):
            TagsReplace(tags={"k": value})
    with pytest.raises(ValidationError, match="both set and removed"):
        TagsChange(set={"a": "1"}, remove=["a"])
