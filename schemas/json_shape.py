"""What JSON every fleet message must keep to beyond its schema: at most `MAX_DEPTH` levels of
nested objects and arrays (pydantic's JSON parser stops near 200, so a deeper event could not
be read back by the controller), and no lone UTF-16 surrogate escape such as `\\ud800` (valid
JSON for Python's parser, but not text any UTF-8 message can carry)."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32


def is_text(text: str) -> bool:
    """False for a str holding a lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unusable_json(value: Any, what: str) -> str | None:
    """Why `value` (parsed JSON, or a dict about to be sent) breaks the rules above, naming it
    `what` ("task message", "result"), or None."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{what} nests objects/arrays more than {MAX_DEPTH} levels deep; flatten it"
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        keys = list(node.keys()) if isinstance(node, dict) else []
        if not all(is_text(t) for t in (*keys, *(c for c in children if isinstance(c, str))) if isinstance(t, str)):
            return f"{what} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text"
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return None
