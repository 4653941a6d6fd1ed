"""MediQ-format JSONL: one clinical case per line (fields in app/data/README.md).

What is read from each record:

- ``id`` (int or string; unique in the file), ``question`` (the clinical inquiry),
  ``options`` (``{"A": text, ...}`` in letter order, or a list of texts), ``answer_idx``
  (the true option's letter, or its 0-based index for a list), optionally ``answer`` (must
  equal the true option's text when present);
- ``context``: a list of sentences (a string is one sentence); ``context[0]`` is the
  initial information the clinician starts from;
- the facts the simulated patient may reveal: ``atomic_facts``, or ``facts`` when the
  file has no ``atomic_facts``. Leading enumeration ("3. ") is stripped: the patient prompt
  numbers the facts itself;
- ``patient``: ``age`` ("21 years old" or a number), ``gender``, and the specialty used for
  grouping and stratification: ``patient.specialties[0]``, else ``patient.gpt_specialty``,
  else a top-level ``gpt_specialty``, else ``"unknown"``.

Bad records are never skipped silently: strict mode raises ``DatasetError`` listing every
bad line with its number; lenient mode keeps the good records and reports the bad ones in
``MediQDataset.problems``. The dataset hash is the sha256 of the file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.types import CaseContext
from app.errors import InvalidInputError

__all__ = [
    "SHIPPED_DATASETS_DIR",
    "UNKNOWN_SPECIALTY",
    "DatasetError",
    "LineProblem",
    "MediQCase",
    "MediQDataset",
    "file_sha256",
    "load_mediq",
    "parse_record",
]

SHIPPED_DATASETS_DIR = Path(__file__).resolve().parent.parent / "data" / "mediq"
UNKNOWN_SPECIALTY = "unknown"
_ENUMERATION = re.compile(r"^\s*\d+\s*[.)]\s+")
_AGE = re.compile(r"(\d{1,3})")
_MAX_REPORTED = 50


@dataclass(frozen=True, slots=True)
class LineProblem:
    """Why one line of the file was rejected (1-based line number)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class DatasetError(InvalidInputError):
    """The file cannot be read, or has bad records (strict mode); ``problems`` lists them."""

    def __init__(self, path: Path | str, problems: Sequence[LineProblem], *, detail: str = ""):
        self.path = str(path)
        self.problems = tuple(problems)
        if not detail:
            shown = "; ".join(str(p) for p in self.problems[:_MAX_REPORTED])
            more = len(self.problems) - _MAX_REPORTED
            detail = f"{len(self.problems)} bad record(s) in {self.path}: {shown}" + (
                f"; and {more} more" if more > 0 else ""
            )
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class MediQCase:
    """One labelled case: the inquiry, its options (the label set) and the patient's facts."""

    case_id: str
    line: int
    inquiry: str
    options: tuple[str, ...]
    answer_index: int
    context: tuple[str, ...]
    facts: tuple[str, ...]
    specialty: str
    age: int | None = None
    sex: str | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The label set: the options' texts in letter order."""
        return self.options

    @property
    def true_label(self) -> str:
        """``options[answer_idx]``."""
        return self.options[self.answer_index]

    @property
    def summary(self) -> str:
        """The initial information: ``context[0]``."""
        return self.context[0]

    @property
    def case_context(self) -> CaseContext:
        """What the interviewer starts from (summary = context[0])."""
        return CaseContext(summary=self.summary, age=self.age, sex=self.sex)

    @property
    def fingerprint(self) -> str:
        """sha256 of the inquiry, options and context: the same case in any file or order."""
        payload = json.dumps([self.inquiry, list(self.options), list(self.context)])
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MediQDataset:
    """The good cases of a file, its hash, and (lenient mode) the rejected lines."""

    path: Path
    sha256: str
    cases: tuple[MediQCase, ...]
    problems: tuple[LineProblem, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.cases)

    def by_id(self) -> dict[str, MediQCase]:
        """Cases keyed by id."""
        return {c.case_id: c for c in self.cases}


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes (the dataset hash recorded with every run)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_mediq(path: Path | str, *, strict: bool = True) -> MediQDataset:
    """Read a MediQ JSONL file; strict: any bad line raises ``DatasetError`` listing all."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DatasetError(p, (), detail=f"cannot read dataset {p}: {exc.strerror}") from exc
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(p, (), detail=f"dataset {p} is not UTF-8: {exc}") from exc
    cases: list[MediQCase] = []
    problems: list[LineProblem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(LineProblem(number, f"not valid JSON ({exc.msg})"))
            continue
        try:
            case = parse_record(record, line=number)
        except ValueError as exc:
            problems.append(LineProblem(number, str(exc)))
            continue
        if case.case_id in seen:
            problems.append(
                LineProblem(
                    number, f"duplicate id {case.case_id!r} (first on line {seen[case.case_id]})"
                )
            )
            continue
        seen[case.case_id] = number
        cases.append(case)
    if problems and strict:
        raise DatasetError(p, problems)
    if not cases and not problems:
        raise DatasetError(p, (), detail=f"dataset {p} has no records")
    return MediQDataset(path=p, sha256=sha, cases=tuple(cases), problems=tuple(problems))


def parse_record(record: object, *, line: int = 0) -> MediQCase:
    """One record as a case; ValueError says what is wrong (without echoing patient text)."""
    if not isinstance(record, Mapping):
        raise ValueError("record is not a JSON object")
    case_id = record.get("id")
    if isinstance(case_id, bool) or not isinstance(case_id, int | str) or str(case_id) == "":
        raise ValueError("'id' must be a non-empty string or an integer")
    inquiry = _text(record, "question")
    options = _options(record.get("options"))
    answer_index = _answer_index(record.get("answer_idx"), record.get("options"), len(options))
    answer = record.get("answer")
    if answer is not None and str(answer).strip() != options[answer_index]:
        raise ValueError("'answer' differs from the option named by 'answer_idx'")
    context = _sentences(record.get("context"), "context")
    if "atomic_facts" in record:
        facts = _facts(record.get("atomic_facts"), "atomic_facts")
    elif "facts" in record:
        facts = _facts(record.get("facts"), "facts")
    else:
        raise ValueError("no 'atomic_facts' or 'facts'")
    patient = record.get("patient") or {}
    if not isinstance(patient, Mapping):
        raise ValueError("'patient' must be an object")
    return MediQCase(
        case_id=str(case_id),
        line=line,
        inquiry=inquiry,
        options=options,
        answer_index=answer_index,
        context=context,
        facts=facts,
        specialty=_specialty(patient, record),
        age=_age(patient.get("age")),
        sex=_sex(patient.get("gender", patient.get("sex"))),
    )


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string")
    return value.strip()


def _options(raw: object) -> tuple[str, ...]:
    if isinstance(raw, Mapping):
        letters = sorted(raw)
        expected = [chr(ord("A") + i) for i in range(len(letters))]
        if letters != expected:
            raise ValueError(f"'options' keys must be A, B, ... in sequence, got {letters}")
        values = [raw[k] for k in letters]
    elif isinstance(raw, list):
        values = list(raw)
    else:
        raise ValueError("'options' must be an object {letter: text} or a list")
    if len(values) < 2 or len(values) > 26:
        raise ValueError(f"need 2..26 options, got {len(values)}")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError("every option must be a non-empty string")
    options = tuple(v.strip() for v in values)
    if len(set(options)) != len(options):
        raise ValueError("options must be distinct")
    return options


def _answer_index(raw: object, options: object, k: int) -> int:
    if isinstance(raw, str) and len(raw.strip()) == 1 and raw.strip().isalpha():
        index = ord(raw.strip().upper()) - ord("A")
    elif isinstance(raw, int) and not isinstance(raw, bool) and isinstance(options, list):
        index = raw
    else:
        raise ValueError("'answer_idx' must be an option letter")
    if not 0 <= index < k:
        raise ValueError(f"'answer_idx' {raw!r} names no option")
    return index


def _sentences(raw: object, key: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"'{key}' must be a non-empty list of strings")
    if not all(isinstance(s, str) for s in raw):
        raise ValueError(f"'{key}' must hold strings only")
    out = tuple(s.strip() for s in raw)
    if not out[0]:
        raise ValueError(f"'{key}[0]' (the initial information) is empty")
    return out


def _facts(raw: object, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ValueError(f"'{key}' must be a list of strings")
    facts = tuple(f for f in (_ENUMERATION.sub("", s).strip() for s in raw) if f)
    return facts


def _specialty(patient: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    specialties = patient.get("specialties")
    first = specialties[0] if isinstance(specialties, list) and specialties else None
    if isinstance(first, str) and first.strip():
        return first.strip()
    for source in (patient, record):
        gpt = source.get("gpt_specialty")
        if isinstance(gpt, str) and gpt.strip():
            return gpt.strip()
    return UNKNOWN_SPECIALTY


def _age(raw: object) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 <= raw <= 130 else None
    if isinstance(raw, str):
        match = _AGE.search(raw)
        if match is None:
            return None
        # "6 months old", "3 weeks old", "2 days old": under a year.
        if any(unit in raw.lower() for unit in ("month", "week", "day", "hour")):
            return 0
        age = int(match.group(1))
        return age if age <= 130 else None
    return None


def _sex(raw: object) -> str | None:
    if isinstance(raw, str) and raw.strip():
        return raw.strip().lower()[:32]
    return None
