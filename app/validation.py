"""Checks every wire model of every API surface applies to what callers send."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def reject_nul(value: T) -> T:
    """Refuse text (or a list of texts) holding NUL characters.

    PostgreSQL cannot store U+0000 in text or JSON columns (SQLite can), so without this the
    same request would be a 201 on one database and a 500 on the other; with it, a 422.
    """
    texts = value if isinstance(value, list | tuple) else [value]
    if any(isinstance(text, str) and "\x00" in text for text in texts):
        raise ValueError("text must not contain NUL (U+0000) characters")
    return value
