"""Closed question banks: a JSON file mapping a bank name to its list of questions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from app.errors import InvalidInputError, NotFoundError

__all__ = [
    "DEFAULT_QUERY_BANKS_PATH",
    "dedupe_questions",
    "load_query_bank",
    "load_query_banks",
    "normalize_question",
]

DEFAULT_QUERY_BANKS_PATH = Path(__file__).resolve().parent.parent / "data" / "query_banks.json"


def normalize_question(question: str) -> str:
    """Comparison key: whitespace collapsed and case folded ("Any  Fever?" == "any fever?")."""
    return " ".join(question.split()).casefold()


def dedupe_questions(questions: Iterable[str], *, exclude: Iterable[str] = ()) -> list[str]:
    """Questions in order, dropping blanks, repeats and anything in ``exclude`` (normalised)."""
    seen = {normalize_question(q) for q in exclude}
    kept: list[str] = []
    for q in questions:
        key = normalize_question(q)
        if key and key not in seen:
            seen.add(key)
            kept.append(q)
    return kept


def load_query_banks(path: str | Path = DEFAULT_QUERY_BANKS_PATH) -> dict[str, tuple[str, ...]]:
    """Read ``{name: [question, ...]}``; each bank deduplicated, order kept."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read query banks from {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInputError(f"query banks in {path} must be a JSON object of lists")
    banks: dict[str, tuple[str, ...]] = {}
    for name, questions in raw.items():
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise InvalidInputError(f"query bank {name!r} in {path} must be a list of strings")
        bank = tuple(dedupe_questions(questions))
        if not bank:
            raise InvalidInputError(f"query bank {name!r} in {path} is empty")
        banks[str(name)] = bank
    return banks


def load_query_bank(name: str, path: str | Path = DEFAULT_QUERY_BANKS_PATH) -> tuple[str, ...]:
    """One named bank from the file; NotFoundError lists the names it has."""
    banks = load_query_banks(path)
    try:
        return banks[name]
    except KeyError:
        raise NotFoundError(
            f"no query bank {name!r}; available: {', '.join(sorted(banks))}"
        ) from None
