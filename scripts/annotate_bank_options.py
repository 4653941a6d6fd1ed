"""Mark the shipped banks' yes/no questions with the options yes / no / unsure (idempotent).

    .venv/bin/python scripts/annotate_bank_options.py   # rewrites app/data/query_banks.json

A question is marked when it is a closed question by its grammar: it starts with an
auxiliary verb (do, does, did, have, has, had, is, are, was, were) and offers no
alternative ("... or are they bilateral?", "or do they come and go"), asks no follow-up
("if so, ...", "what", "which", "how", "describe", "list") and names no open choice. The
rule is conservative: a closed question it misses stays free text, which is always
possible anyway; an option only suggests a button, its display text is the answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parents[1] / "app" / "data" / "query_banks.json"
PRESET = "yes-no-unsure"

_CLOSED = re.compile(r"^(do|does|did|have|has|had|is|are|was|were)\b", re.I)
_OPEN = re.compile(
    r"\bor (are|is|do|does|did|was|were|has|have|had|would|will|can|both|neither|not|none|"
    r"just|only|something|someone|anything|somewhere|other|otherwise|elsewhere|all)\b"
    r"|\bor (a|an|the) [a-z-]+\?$"
    r"|\b(if so|if yes|what|which|how|describe|list|tell me|explain|specify|elaborate)\b",
    re.I,
)


def closed(question: str) -> bool:
    """Whether ``question`` is answered yes or no by its form."""
    return bool(_CLOSED.match(question)) and not _OPEN.search(question)


def annotate(entry: Any) -> Any:
    text = entry if isinstance(entry, str) else entry["text"]
    return {"text": text, "options": PRESET} if closed(text) else text


def main() -> None:
    banks = json.loads(PATH.read_text(encoding="utf-8"))
    out = {name: [annotate(q) for q in questions] for name, questions in banks.items()}
    # The file's own layout: one line, json.dumps' default separators.
    PATH.write_text(json.dumps(out), encoding="utf-8")
    for name, questions in out.items():
        marked = sum(isinstance(q, dict) for q in questions)
        print(f"{name}: {marked} of {len(questions)} questions offer yes / no / unsure")


if __name__ == "__main__":
    main()
