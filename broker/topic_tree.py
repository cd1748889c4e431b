"""Topic trees: find matching subscriptions and retained messages without scanning them all.

amqtt 0.12.1 keeps subscriptions in a dict keyed by topic filter and tests every filter
against every published topic (about 221 msg/s with 5,000 filters, see
docs/architecture.md#measured-facts-the-code-relies-on). The two
dicts here are drop-in replacements for amqtt's `Broker._subscriptions` (filter → subscribers)
and `Broker._retained_messages` (topic → message): they are still plain dicts to amqtt and its
plugins, and also keep a tree of topic levels, so

- `SubscriptionTable.matching(topic)` walks one branch per topic level (plus the `+` and `#`
  branches), whatever the number of filters;
- `RetainedTable.matching(topic_filter)` visits only the retained topics the filter can match.

Both follow MQTT 3.1.1 section 4.7: `#` matches its parent level and everything below it, `+`
matches exactly one level (empty levels included), and a filter starting with a wildcard does
not match a topic starting with `$` [MQTT-4.7.2-1].
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class _Node:
    """One topic level: its children by level name and the key that ends here, if any."""

    __slots__ = ("children", "key")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.key: str | None = None


class _TopicIndexedDict(dict[str, V], Generic[V]):
    """A dict whose keys (topics or topic filters) are also kept in a tree of their levels.

    Every mutating dict method is overridden so the tree never drifts from the keys."""

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        super().__init__()
        self._root = _Node()
        for key, value in items:
            self[key] = value

    # --- tree upkeep -------------------------------------------------------------------------
    def _index(self, key: str) -> None:
        node = self._root
        for level in key.split("/"):
            node = node.children.setdefault(level, _Node())
        node.key = key

    def _unindex(self, key: str) -> None:
        path = [self._root]
        for level in key.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        path[-1].key = None
        levels = key.split("/")
        for depth in range(len(levels), 0, -1):  # prune branches left empty
            node = path[depth]
            if node.key is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

    # --- dict API ------------------------------------------------------------------------------
    def __setitem__(self, key: str, value: V) -> None:
        if key not in self:
            self._index(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._unindex(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        if key in self:
            self._unindex(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, V]:
        key, value = super().popitem()
        self._unindex(key)
        return key, value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        super().clear()
        self._root = _Node()

    def __ior__(self, other: Any) -> "_TopicIndexedDict[V]":  # type: ignore[override,misc]
        self.update(other)
        return self


class SubscriptionTable(_TopicIndexedDict[V]):
    """Topic filter → subscribers, with the filters that match a topic found by tree walk."""

    def matching(self, topic: str) -> list[str]:
        """The filters (keys) that match the published `topic`."""
        found: list[str] = []
        levels = topic.split("/")
        dollar = topic.startswith("$")
        last = len(levels)
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if not (dollar and depth == 0):
                hash_node = node.children.get("#")  # matches this level and all below
                if hash_node is not None and hash_node.key is not None:
                    found.append(hash_node.key)
            if depth == last:
                if node.key is not None:
                    found.append(node.key)
                continue
            exact = node.children.get(levels[depth])
            if exact is not None:
                stack.append((exact, depth + 1))
            if not (dollar and depth == 0):
                plus = node.children.get("+")
                if plus is not None:
                    stack.append((plus, depth + 1))
        return found


class RetainedTable(_TopicIndexedDict[V]):
    """Topic → retained message, with the topics a subscription filter matches found by tree walk."""

    def matching(self, topic_filter: str) -> Iterator[str]:
        """The topics (keys) that `topic_filter` matches."""
        levels = topic_filter.split("/")
        wildcard_first = levels[0] in ("+", "#")

        def walk(node: _Node, depth: int) -> Iterator[str]:
            if depth == len(levels):
                if node.key is not None:
                    yield node.key
                return
            level = levels[depth]
            if level == "#":
                yield from _subtree(node, skip_dollar=wildcard_first and depth == 0)
            elif level == "+":
                for name, child in node.children.items():
                    if depth == 0 and wildcard_first and name.startswith("$"):
                        continue
                    yield from walk(child, depth + 1)
            elif (named := node.children.get(level)) is not None:
                yield from walk(named, depth + 1)

        yield from walk(self._root, 0)


def _subtree(node: _Node, *, skip_dollar: bool) -> Iterator[str]:
    """Every key at `node` (the parent level `#` also matches) and below it."""
    if node.key is not None:
        yield node.key
    stack = [child for name, child in node.children.items() if not (skip_dollar and name.startswith("$"))]
    while stack:
        current = stack.pop()
        if current.key is not None:
            yield current.key
        stack.extend(current.children.values())


def is_valid_filter(topic_filter: str) -> bool:
    """MQTT 3.1.1 section 4.7: not empty, `+` and `#` only as whole levels, `#` only last."""
    levels = topic_filter.split("/")
    return bool(topic_filter) and all(
        level in ("+", "#") or ("+" not in level and "#" not in level) for level in levels
    ) and "#" not in levels[:-1]
