"""Closed question banks: a JSON file mapping a bank name to its questions.

A bank is a list of questions, or an object ``{"options": ..., "questions": [...]}`` whose
``options`` every question of the bank offers. A question is a string, or an object
``{"text": ..., "options": ...}`` whose ``options`` (null: free text) win over the bank's.
Options are a preset name (``yes-no-unsure``, ``yes-no``) or a list of ``{"code",
"display"}`` (``app.engine.options``). A file of plain lists reads as before.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.engine.options import AnswerOptions, parse_options
from app.errors import InvalidInputError, NotFoundError

__all__ = [
    "DEFAULT_QUERY_BANKS_PATH",
    "BankOptions",
    "dedupe_questions",
    "load_query_bank",
    "load_query_bank_options",
    "load_query_banks",
    "normalize_question",
    "shipped_bank_options",
]

# A bank's answer options: normalized question -> its options (free-text questions absent).
BankOptions = dict[str, AnswerOptions]

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
    """Read the banks' questions ``{name: (question, ...)}``; deduplicated, order kept."""
    return {name: questions for name, (questions, _) in _read_banks(path).items()}


def load_query_bank_options(path: str | Path = DEFAULT_QUERY_BANKS_PATH) -> dict[str, BankOptions]:
    """Each bank's answer options, by normalized question (free-text questions absent)."""
    return {name: options for name, (_, options) in _read_banks(path).items()}


def _read_banks(path: str | Path) -> dict[str, tuple[tuple[str, ...], BankOptions]]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read query banks from {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInputError(f"query banks in {path} must be a JSON object of banks")
    banks: dict[str, tuple[tuple[str, ...], BankOptions]] = {}
    for name, entry in raw.items():
        where = f"query bank {name!r} in {path}"
        default: AnswerOptions | None = None
        if isinstance(entry, dict) and set(entry) <= {"options", "questions"}:
            default = parse_options(entry.get("options"), where=where)
            entry = entry.get("questions")
        if not isinstance(entry, list):
            raise InvalidInputError(
                f'{where} must be a list of questions or {{"options", "questions"}}'
            )
        texts: list[str] = []
        options: BankOptions = {}
        for question in entry:
            text, own = _question(question, where=where, default=default)
            key = normalize_question(text)
            if own is not None and key not in options:
                options[key] = own
            texts.append(text)
        bank = tuple(dedupe_questions(texts))
        if not bank:
            raise InvalidInputError(f"{where} is empty")
        banks[str(name)] = (bank, options)
    return banks


def _question(
    raw: Any, *, where: str, default: AnswerOptions | None
) -> tuple[str, AnswerOptions | None]:
    if isinstance(raw, str):
        return raw, default
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("text"), str)
        and set(raw) <= {"text", "options"}
    ):
        own = parse_options(raw["options"], where=where) if "options" in raw else default
        return raw["text"], own
    raise InvalidInputError(f'{where}: a question is a string or {{"text", "options"}}')


def load_query_bank(name: str, path: str | Path = DEFAULT_QUERY_BANKS_PATH) -> tuple[str, ...]:
    """One named bank from the file; NotFoundError lists the names it has."""
    banks = load_query_banks(path)
    try:
        return banks[name]
    except KeyError:
        raise NotFoundError(
            f"no query bank {name!r}; available: {', '.join(sorted(banks))}"
        ) from None


@functools.cache
def _shipped_options() -> dict[str, BankOptions]:
    return load_query_bank_options()


def shipped_bank_options(bank_name: str, question: str) -> AnswerOptions | None:
    """The options a shipped bank gives ``question`` (None: free text, or not in the bank)."""
    return _shipped_options().get(bank_name, {}).get(normalize_question(question))
