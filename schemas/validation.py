"""One way to turn a pydantic `ValidationError` into words, for every package.

Each problem is `field.path: message`; the offending values are never shown, because task
params, settings and REST bodies may hold secrets (passwords, codes, tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails


def safe_errors(exc: ValidationError) -> list[ErrorDetails]:
    """The errors of `exc` without their input values or documentation URLs."""
    return exc.errors(include_input=False, include_url=False)


def location(loc: Sequence[Any], prefix: str | None = None, empty: str = "(message)") -> str:
    """`params.a.0` from a pydantic `loc` tuple, with an optional leading field name."""
    parts = [str(part) for part in loc]
    if prefix:
        parts.insert(0, prefix)
    return ".".join(parts) or empty


def describe_validation_error(
    exc: ValidationError, prefix: str | None = None, *, limit: int | None = None, empty: str = "(message)"
) -> str:
    """`field: problem; field: problem`, at most `limit` of them and a count of the rest."""
    errors = safe_errors(exc)
    shown = errors if limit is None else errors[:limit]
    text = "; ".join(f"{location(err['loc'], prefix, empty)}: {err['msg']}" for err in shown)
    hidden = len(errors) - len(shown)
    return f"{text} (and {hidden} more)" if hidden > 0 else text


__all__ = ["describe_validation_error", "location", "safe_errors"]
