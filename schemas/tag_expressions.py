"""The tag expression language of targets (`platform=douyin and region in (sh, bj)`), parsed with
pyparsing into a predicate over a device's groups and tags.

    key=value   key!=value   key in (a, b)   key not in (a, b)   has key
    … and …     … or …       not …           ( … )

`not` binds tighter than `and`, `and` tighter than `or`. The key `group` tests the device's
groups; every other key its tags. A device without the key matches `!=` and `not in`, and no
other test. Values are any text without spaces, quotes, commas, brackets, `=` and `!` (`上海` is
fine), or quoted ('Shanghai office').
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import pyparsing as pp

GROUP_KEY = "group"
KEYWORDS = frozenset({"and", "or", "not", "in", "has"})  # never tag keys
EXAMPLE = "platform=douyin and region in (sh, bj)"


class _Node(ABC):
    """A node of a parsed expression: call it with a device's groups and tags."""

    @abstractmethod
    def __call__(self, groups: frozenset[str], tags: Mapping[str, str]) -> bool: ...

    @abstractmethod
    def keys(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class _Comparison(_Node):
    key: str
    operator: str  # = != in "not in" has
    values: frozenset[str]

    def __call__(self, groups: frozenset[str], tags: Mapping[str, str]) -> bool:
        held = groups if self.key == GROUP_KEY else frozenset(filter(None, [tags.get(self.key)]))
        if self.operator == "has":
            return bool(held)
        found = bool(held & self.values)
        return found if self.operator in ("=", "in") else not found

    def keys(self) -> frozenset[str]:
        return frozenset() if self.key == GROUP_KEY else frozenset({self.key})


@dataclass(frozen=True)
class _Not(_Node):
    inner: _Node

    def __call__(self, groups: frozenset[str], tags: Mapping[str, str]) -> bool:
        return not self.inner(groups, tags)

    def keys(self) -> frozenset[str]:
        return self.inner.keys()


@dataclass(frozen=True)
class _Join(_Node):
    combine: Callable[[Iterable[bool]], bool]  # all or any
    parts: tuple[_Node, ...]

    def __call__(self, groups: frozenset[str], tags: Mapping[str, str]) -> bool:
        return self.combine(part(groups, tags) for part in self.parts)

    def keys(self) -> frozenset[str]:
        return frozenset().union(*(part.keys() for part in self.parts))


@dataclass(frozen=True)
class TagExpression:
    """A parsed expression: `matches(groups, tags)`, and the tag keys it names (to spot typos)."""

    text: str
    root: _Node = field(repr=False)

    def matches(self, groups: Collection[str], tags: Mapping[str, str]) -> bool:
        return self.root(frozenset(groups), tags)

    @property
    def keys(self) -> frozenset[str]:
        return self.root.keys()


def _comparison(tokens: pp.ParseResults) -> _Node:
    key, operator, *values = tokens
    return _Comparison(key, operator, frozenset(values))


def _join(combine: Callable[[Iterable[bool]], bool]) -> Callable[[pp.ParseResults], _Node]:
    return lambda tokens: _Join(combine, tuple(tokens[0][::2]))  # the operands between and/or


@lru_cache(maxsize=1)
def _grammar() -> pp.ParserElement:
    and_, or_, not_, in_, has = (pp.CaselessKeyword(word) for word in ("and", "or", "not", "in", "has"))
    key = ~(and_ | or_ | not_ | in_ | has) + pp.Regex(r"[a-z][a-z0-9_.-]{0,63}").set_name("a key")
    value = (pp.QuotedString("'") | pp.QuotedString('"') | pp.Regex(r"[^\s'\"(),=!]{1,128}")).set_name("a value")
    values = pp.Suppress("(") + pp.DelimitedList(value) + pp.Suppress(")")
    not_in = (not_ + in_).set_parse_action(lambda: "not in")
    membership = key + (not_in | in_.copy().set_parse_action(lambda: "in")) + values
    equality = key + pp.one_of("!= =") + value
    presence = (has + key).set_parse_action(lambda tokens: [tokens[1], "has"])
    comparison = (presence | membership | equality).add_parse_action(_comparison).set_name(
        "a comparison (key=value, key!=value, key in (a, b), key not in (a, b) or has key; keys are lower-case)")
    return pp.infix_notation(comparison, [
        (not_, 1, pp.OpAssoc.RIGHT, lambda tokens: _Not(tokens[0][1])),
        (and_, 2, pp.OpAssoc.LEFT, _join(all)),
        (or_, 2, pp.OpAssoc.LEFT, _join(any)),
    ])


def parse_tag_expression(text: str) -> TagExpression:
    """Parse `text`; ValueError saying where it is wrong and what it should look like."""
    try:
        root = _grammar().parse_string(text, parse_all=True)[0]
    except pp.ParseBaseException as exc:
        raise ValueError(
            f"tag expression {text!r} is not valid at column {exc.column}: {exc.msg}; for example `{EXAMPLE}`"
        ) from None
    return TagExpression(text=text, root=root)
