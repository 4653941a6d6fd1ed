"""The load scenario's logic, free of locust and HTTP: cases, answers, records, checks.

The locustfile, the fixed-rate GET client and the exactly-once check share this module, and
the unit tests exercise it without a stack (locust monkey-patches the process on import, so
nothing here imports it).

Records never hold patient text: an answer is identified by its session, step, question id,
Idempotency-Key and the SHA-256 of its text.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = ROOT / "app" / "data" / "mediq" / "imedqa_dev.jsonl"

# Bank questions keep a turn at seconds on the CPU model (a generated turn takes over a
# minute): 2 candidates x 2 simulated answers = 2 short generations and 5 posterior prompts.
DEFAULT_SESSION_OPTIONS: dict[str, Any] = {
    "alpha": 0.1,
    "policy": "cip",
    "question_source": "bank",
    "max_questions": 3,
    "n_candidate_questions": 2,
    "n_answers": 2,
    "stop_on_no_gain": False,
}

_BANK_BY_SPECIALTY = {"Neurology": "neurology", "Pediatrics": "pediatrics"}
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "by",
        "can",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "their",
        "there",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "with",
        "you",
        "your",
        "patient",
        "patients",
        "physician",
    ]
)
_NEGATIVE_ANSWERS = (
    "No, I haven't noticed that.",
    "No.",
    "I'm not sure, I don't think so.",
    "Not that I know of.",
)
_NUMBERING = re.compile(r"^\s*\d+\.\s*")
_WORD = re.compile(r"[a-z0-9]+")
MAX_ANSWER_CHARS = 240


@dataclass(frozen=True)
class Case:
    """A MedQA-like case as an interview opens it: first sentence, inquiry, four options."""

    case_id: int
    summary: str
    age: int | None
    sex: str | None
    inquiry: str
    candidates: tuple[str, ...]
    facts: tuple[str, ...]  # what the simulated patient can tell, one short fact each
    bank: str

    def session_body(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The POST /v1/sessions body for this case."""
        body: dict[str, Any] = {
            "patient": {"summary": self.summary, "age": self.age, "sex": self.sex},
            "inquiry": self.inquiry,
            "candidates": list(self.candidates),
            "question_bank_name": self.bank,
            **DEFAULT_SESSION_OPTIONS,
        }
        body.update(options or {})
        if body.get("question_source") != "bank":
            body.pop("question_bank_name", None)
        return body


def _age(value: object) -> int | None:
    match = re.match(r"\s*(\d{1,3})", str(value))
    if match is None:
        return None
    age = int(match.group(1))
    return age if age <= 130 else None


def _sex(value: object) -> str | None:
    return {"male": "male", "female": "female"}.get(str(value).strip().lower())


def case_from_row(row: Mapping[str, Any]) -> Case | None:
    """A case from one iMedQA row, or None when the row cannot open an interview."""
    context = [str(s).strip() for s in row.get("context") or [] if str(s).strip()]
    options = [str(v).strip() for v in (row.get("options") or {}).values() if str(v).strip()]
    question = str(row.get("question") or "").strip()
    if not context or not question or len(options) < 2:
        return None
    if len({o.casefold() for o in options}) != len(options):
        return None
    patient = row.get("patient") or {}
    facts = tuple(
        _NUMBERING.sub("", str(f)).strip()[:MAX_ANSWER_CHARS]
        for f in row.get("atomic_facts") or context[1:]
        if str(f).strip()
    )
    specialties = patient.get("specialties") or []
    bank = next((_BANK_BY_SPECIALTY[s] for s in specialties if s in _BANK_BY_SPECIALTY), None)
    return Case(
        case_id=int(row.get("id", -1)),
        summary=context[0][:8000],
        age=_age(patient.get("age")),
        sex=_sex(patient.get("gender")),
        inquiry=question[:1000],
        candidates=tuple(o[:200] for o in options),
        facts=facts,
        bank=bank or "internal_medicine",
    )


def load_cases(path: Path = CASES_FILE, *, limit: int | None = None) -> list[Case]:
    """The usable cases of an iMedQA JSONL file, in file order."""
    cases: list[Case] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            case = case_from_row(json.loads(line))
            if case is not None:
                cases.append(case)
                if limit is not None and len(cases) >= limit:
                    break
    return cases


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2}


def plausible_answer(question: str, facts: Sequence[str], rng: random.Random) -> str:
    """A short patient-style answer: the case fact sharing most words with the question.

    Like MediQ's simple patient: a matching fact, else a plain negative.
    """
    wanted = _words(question)
    best, best_overlap = "", 0
    for fact in facts:
        overlap = len(wanted & _words(fact))
        if overlap > best_overlap:
            best, best_overlap = fact, overlap
    if best_overlap == 0:
        return rng.choice(_NEGATIVE_ANSWERS)
    answer = best.strip()
    if not answer.endswith("."):
        answer += "."
    return answer[:MAX_ANSWER_CHARS].strip()


def answer_sha256(text: str) -> str:
    """How records name an answer (the server strips whitespace; we send stripped text)."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerAttempt:
    """One HTTP attempt to submit an answer."""

    session_id: str
    step: int
    question_id: str
    idempotency_key: str
    answer_sha256: str
    kind: str  # "first", "replay" (same key, after the reply) or "duplicate" (same key, at once)
    status: int  # HTTP status; 0 when no response came (timeout, connection error)
    version: int | None = None  # the session version the reply carried
    next_question_id: str | None = None
    at: float = 0.0
    # "answer": the attempt and its outcome; "sent": written just before the request goes out,
    # so that a request cut by the end of the run (its outcome never recorded) is still known.
    record: str = "answer"


@dataclass(frozen=True)
class InterviewDone:
    """One interview, from create to finalize (or where it failed)."""

    session_id: str | None
    case_id: int
    turns: int
    ok: bool
    started: float
    finished: float
    reason: str = ""
    record: str = "interview"


@dataclass(frozen=True)
class Phase:
    """When the load test started, and when its run time ran out."""

    event: str  # "start" or "stopping"
    at: float
    record: str = "phase"


class RecordWriter:
    """Appends records as JSON lines; safe to share between greenlets and threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: AnswerAttempt | InterviewDone | Phase) -> None:
        line = json.dumps(asdict(record), separators=(",", ":"))
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def session_ids(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The sessions the records name, in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        if r.get("session_id"):
            seen.setdefault(str(r["session_id"]), None)
    return list(seen)


# -- the exactly-once check -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTurn:
    """An answered turn as the database holds it."""

    session_id: str
    step: int
    question_id: str | None
    answer_sha256: str


@dataclass
class ExactlyOnceReport:
    """Every acknowledged answer stored exactly once; nothing stored that nobody sent."""

    sessions: int = 0
    keys: int = 0  # distinct (session, Idempotency-Key)
    attempts: int = 0
    acknowledged: int = 0  # keys with at least one 2xx reply
    stored_once: int = 0
    unacknowledged_stored: int = 0  # no 2xx seen (timeout), yet stored once: allowed
    unacknowledged_absent: int = 0  # no 2xx seen and not stored: allowed
    cut: int = 0  # keys sent with no outcome recorded (the run stopped mid-request): unacknowledged
    replays: int = 0
    replays_consistent: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.stored_once == self.acknowledged

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


MAX_PROBLEMS = 50


def check_exactly_once(
    records: Iterable[Mapping[str, Any]],
    stored: Iterable[StoredTurn],
    idempotency_keys: Iterable[tuple[str, str]],
) -> ExactlyOnceReport:
    """Compare the client's answer records with the answered turns and idempotency records.

    ``stored`` holds every answered turn of the recorded sessions; ``idempotency_keys`` every
    (session id, key) row. An acknowledged key must be stored exactly once, at its question,
    with its text, and must have exactly one idempotency row; every replay of a key must have
    carried the same reply (version, next question) as the first 2xx; every stored answer must
    belong to a recorded key.
    """
    report = ExactlyOnceReport()

    def problem(text: str) -> None:
        if len(report.problems) < MAX_PROBLEMS:
            report.problems.append(text)

    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    sent: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in records:
        sent_key = (str(r.get("session_id")), str(r.get("idempotency_key")))
        if r.get("record", "answer") == "sent":
            sent.setdefault(sent_key, r)
        elif r.get("record", "answer") == "answer":
            report.attempts += 1
            by_key[sent_key].append(r)
    for sent_key, r in sent.items():
        if sent_key not in by_key:  # the request went out and its outcome was never recorded
            report.cut += 1
            by_key[sent_key].append({**r, "status": 0})
    report.keys = len(by_key)
    report.sessions = len({s for s, _ in by_key})

    turns_by_question: dict[tuple[str, str | None], list[StoredTurn]] = defaultdict(list)
    answered_per_session: dict[str, int] = defaultdict(int)
    for t in stored:
        turns_by_question[(t.session_id, t.question_id)].append(t)
        answered_per_session[t.session_id] += 1
    idem_rows: dict[tuple[str, str], int] = defaultdict(int)
    for session_id, key in idempotency_keys:
        idem_rows[(str(session_id), str(key))] += 1

    claimed: dict[str, int] = defaultdict(int)
    for (session_id, key), attempts in by_key.items():
        question_ids = {str(a["question_id"]) for a in attempts}
        hashes = {str(a["answer_sha256"]) for a in attempts}
        if len(question_ids) != 1 or len(hashes) != 1:
            problem(f"{session_id} key {key}: one key was sent with different answers")
            continue
        question_id, sha = question_ids.pop(), hashes.pop()
        matches = turns_by_question.get((session_id, question_id), [])
        ok_replies = [a for a in attempts if 200 <= int(a["status"]) < 300]
        if ok_replies:
            report.acknowledged += 1
            if len(matches) != 1:
                problem(f"{session_id} key {key}: acknowledged, stored {len(matches)} times")
            elif matches[0].answer_sha256 != sha:
                problem(f"{session_id} key {key}: stored with another answer text")
            elif idem_rows.get((session_id, key), 0) != 1:
                problem(
                    f"{session_id} key {key}: {idem_rows.get((session_id, key), 0)} "
                    "idempotency records"
                )
            else:
                report.stored_once += 1
            first = ok_replies[0]
            for later in ok_replies[1:]:
                report.replays += 1
                same = (later.get("version"), later.get("next_question_id")) == (
                    first.get("version"),
                    first.get("next_question_id"),
                )
                if same:
                    report.replays_consistent += 1
                else:
                    problem(f"{session_id} key {key}: a replay carried a different reply")
        elif not matches:
            report.unacknowledged_absent += 1
        elif len(matches) == 1 and matches[0].answer_sha256 == sha:
            report.unacknowledged_stored += 1
        else:
            problem(f"{session_id} key {key}: unacknowledged, stored {len(matches)} times")
        claimed[session_id] += min(len(matches), 1)

    for session_id, answered in answered_per_session.items():
        if answered != claimed.get(session_id, 0):
            problem(
                f"{session_id}: {answered} answered turns, {claimed.get(session_id, 0)} "
                "match a recorded answer"
            )
    return report


# -- latency summaries ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by the nearest-rank method (no interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
