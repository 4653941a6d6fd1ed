"""Locust scenario: concurrent interviews, and session readers at a constant rate.

    PYTHONPATH=. .venv/bin/locust -f benchmarks/load/locustfile.py InterviewUser \
        --headless -u 6 -r 1 -t 5m --host http://127.0.0.1:8091

``scripts/load.sh`` runs it against a fresh stack. Settings (environment):

    LOAD_API_KEY          the bearer key (required; sessions:write)
    LOAD_RECORDS          where answer records go (JSON lines, no patient text;
                          default var/load/answers.jsonl)
    LOAD_SESSION_OPTIONS  JSON merged into each session's options (default: cip, bank
                          questions, 2 candidates x 2 answers, 3 questions)
    LOAD_THINK_S          the clinician's pause before each answer, "min,max" seconds (2,6)
    LOAD_REPLAY_P         probability that an answer is sent again with the same
                          Idempotency-Key after its reply (a client retry; 0.2)
    LOAD_DUPLICATE_P      probability that it is sent twice at once with the same key
                          (a double click; 0.1)
    LOAD_READER_RATE      GETs per second per ReaderUser (1)
    LOAD_SEED             seed for case order and answers (none: random)

Every answer carries an Idempotency-Key and If-Match (the ETag of the reply before it).
A 429 is honoured (Retry-After) and the same request retried with the same key. Each
attempt is recorded (session, step, question id, key, SHA-256 of the text, status) so that
the exactly-once check can compare the database with what was acknowledged.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar, cast

import gevent
from locust import FastHttpUser, between, constant_throughput, events, task
from locust.contrib.fasthttp import ResponseContextManager

from benchmarks.load.scenario import (
    AnswerAttempt,
    Case,
    InterviewDone,
    Phase,
    RecordWriter,
    answer_sha256,
    load_cases,
    plausible_answer,
)

ANSWERS = "/v1/sessions/[id]/answers"
ANSWERS_REPLAY = "/v1/sessions/[id]/answers (replay)"
ANSWERS_DUPLICATE = "/v1/sessions/[id]/answers (duplicate)"
SESSION = "/v1/sessions/[id]"
FINALIZE = "/v1/sessions/[id]/finalize"
MAX_429_RETRIES = 20
# A turn queues behind the CPU model: give it minutes before calling it a timeout.
NETWORK_TIMEOUT_S = 600.0


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _think_range() -> tuple[float, float]:
    low, _, high = os.environ.get("LOAD_THINK_S", "2,6").partition(",")
    return float(low), float(high or low)


class Shared:
    """Per-process state: cases, the record file, sessions made so far (for readers)."""

    cases: ClassVar[list[Case]] = []
    writer: ClassVar[RecordWriter | None] = None
    sessions: ClassVar[list[str]] = []
    rng: ClassVar[random.Random] = random.Random()

    @classmethod
    def setup(cls) -> None:
        if cls.writer is not None:
            return
        seed = os.environ.get("LOAD_SEED")
        cls.rng = random.Random(int(seed) if seed else None)
        cls.cases = load_cases()
        cls.rng.shuffle(cls.cases)
        path = Path(os.environ.get("LOAD_RECORDS", "var/load/answers.jsonl"))
        cls.writer = RecordWriter(path)

    @classmethod
    def record(cls, record: AnswerAttempt | InterviewDone | Phase) -> None:
        if cls.writer is not None:
            cls.writer.write(record)


def _on_init(**_: Any) -> None:
    Shared.setup()


def _on_test_start(**_: Any) -> None:
    Shared.record(Phase("start", time.time()))


def _on_test_stopping(**_: Any) -> None:
    # The run time is over: interviews finishing after this (stop timeout) are not counted
    # in the per-minute figure.
    Shared.record(Phase("stopping", time.time()))


def _on_quit(**_: Any) -> None:
    if Shared.writer is not None:
        Shared.writer.close()


_events = cast(Any, events)  # locust's event hooks are not annotated
_events.init.add_listener(_on_init)
_events.test_start.add_listener(_on_test_start)
_events.test_stopping.add_listener(_on_test_stopping)
_events.quitting.add_listener(_on_quit)


def _auth() -> dict[str, str]:
    key = os.environ.get("LOAD_API_KEY", "")
    if not key:
        raise RuntimeError("set LOAD_API_KEY")
    return {"Authorization": f"Bearer {key}"}


def _succeed(response: ResponseContextManager) -> None:
    cast(Any, response).success()  # locust's success() is not annotated


def _failed(response: ResponseContextManager, why: str) -> None:
    cast(Any, response).failure(why)


def _backpressure(response: ResponseContextManager) -> None:
    """A 429: its own stats row (not an error, not in the endpoint's latency), then wait."""
    response.request_meta["name"] = f"{response.request_meta['name']} (429)"
    _succeed(response)
    try:
        delay = max(0.5, min(30.0, float(cast(Any, response).headers.get("Retry-After") or 1)))
    except ValueError:
        delay = 1.0
    gevent.sleep(delay)


class InterviewUser(FastHttpUser):
    """A clinician: opens a case, answers the proposed questions, reads, ends."""

    network_timeout = NETWORK_TIMEOUT_S
    connection_timeout = 10.0
    wait_time = between(1, 3)  # between interviews

    def on_start(self) -> None:
        Shared.setup()
        self.headers = _auth()
        self.options: dict[str, Any] = json.loads(os.environ.get("LOAD_SESSION_OPTIONS", "{}"))
        self.think = _think_range()
        self.replay_p = _env_float("LOAD_REPLAY_P", 0.2)
        self.duplicate_p = _env_float("LOAD_DUPLICATE_P", 0.1)
        self.rng = random.Random(Shared.rng.random())

    # -- one interview -----------------------------------------------------------------------

    @task
    def interview(self) -> None:
        case = Shared.cases[self.rng.randrange(len(Shared.cases))]
        started = time.time()
        state = self._create(case)
        if state is None:
            Shared.record(
                InterviewDone(None, case.case_id, 0, False, started, time.time(), "create")
            )
            return
        session_id = str(state["id"])
        Shared.sessions.append(session_id)
        turns, reason = 0, ""
        while state.get("next_question") and not state.get("should_stop"):
            gevent.sleep(self.rng.uniform(*self.think))
            state_or_none = self._answer(case, state)
            if state_or_none is None:
                reason = "answer"
                break
            state = state_or_none
            turns += 1
        ok = not reason and self._read(session_id, turns) and self._finalize(session_id)
        if not ok and not reason:
            reason = "read/finalize"
        Shared.record(
            InterviewDone(session_id, case.case_id, turns, ok, started, time.time(), reason)
        )

    def _create(self, case: Case) -> dict[str, Any] | None:
        body = case.session_body(self.options)
        for _ in range(MAX_429_RETRIES):
            with self.client.post(
                "/v1/sessions", json=body, headers=self.headers, catch_response=True
            ) as response:
                if response.status_code == 429:
                    _backpressure(response)
                    continue
                if response.status_code != 201:
                    _failed(response, f"status {response.status_code}")
                    return None
                data: dict[str, Any] = response.json()
                data["_etag"] = response.headers.get("ETag")
                return data
        return None

    def _answer(self, case: Case, state: dict[str, Any]) -> dict[str, Any] | None:
        question = state["next_question"]
        text = plausible_answer(question["text"], case.facts, self.rng)
        attempt: dict[str, Any] = {
            "session_id": str(state["id"]),
            "step": int(state["step"]),
            "question_id": str(question["id"]),
            "idempotency_key": uuid.uuid4().hex,
            "answer_sha256": answer_sha256(text),
        }
        body = {"question_id": question["id"], "answer": text}
        headers = {**self.headers, "Idempotency-Key": attempt["idempotency_key"]}
        if state.get("_etag"):
            headers["If-Match"] = state["_etag"]

        duplicate = None
        if self.rng.random() < self.duplicate_p:
            # A double click: the same request, same key, at the same moment.
            duplicate = gevent.spawn(self._send, body, headers, attempt, "duplicate")
        reply = self._send(body, headers, attempt, "first", racing=duplicate is not None)
        if duplicate is not None:
            duplicate.join()
            if reply is None:  # the other one won; its reply is the state
                reply = duplicate.value
        if reply is None:
            return None
        if self.rng.random() < self.replay_p:
            # A retry after a lost reply: must return the same reply, change nothing.
            again = self._send(body, headers, attempt, "replay")
            if again is None:
                return None
        return reply

    def _send(
        self,
        body: dict[str, Any],
        headers: dict[str, str],
        attempt: dict[str, Any],
        kind: str,
        *,
        racing: bool = False,
    ) -> dict[str, Any] | None:
        name = {"first": ANSWERS, "replay": ANSWERS_REPLAY, "duplicate": ANSWERS_DUPLICATE}[kind]
        url = f"/v1/sessions/{attempt['session_id']}/answers"
        for _ in range(MAX_429_RETRIES):
            Shared.record(
                AnswerAttempt(**attempt, kind=kind, status=0, at=time.time(), record="sent")
            )
            with self.client.post(
                url, json=body, headers=headers, name=name, catch_response=True
            ) as response:
                status = response.status_code or 0
                data: dict[str, Any] | None = None
                if status == 200:
                    data = response.json()
                    data["_etag"] = response.headers.get("ETag")
                Shared.record(
                    AnswerAttempt(
                        **attempt,
                        kind=kind,
                        status=status,
                        version=data["version"] if data else None,
                        next_question_id=(
                            str(data["next_question"]["id"])
                            if data and data.get("next_question")
                            else None
                        ),
                        at=time.time(),
                    )
                )
                if status == 429:
                    _backpressure(response)
                    continue
                if status == 200:
                    return data
                if status == 409 and (kind == "duplicate" or racing):
                    # Expected: its twin was being applied; exactly one of the two applies
                    # (the caller fails the interview if neither did).
                    _succeed(response)
                    return None
                _failed(response, f"status {status}")
                return None
        return None

    def _read(self, session_id: str, turns: int) -> bool:
        with self.client.get(
            f"/v1/sessions/{session_id}", headers=self.headers, name=SESSION, catch_response=True
        ) as response:
            if response.status_code != 200:
                _failed(response, f"status {response.status_code}")
                return False
            answered = [t for t in response.json()["transcript"] if t.get("answer") is not None]
            if len(answered) != turns:
                _failed(response, f"transcript has {len(answered)} answers, sent {turns}")
                return False
            return True

    def _finalize(self, session_id: str) -> bool:
        with self.client.post(
            f"/v1/sessions/{session_id}/finalize",
            headers=self.headers,
            name=FINALIZE,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                _failed(response, f"status {response.status_code}")
                return False
            return True


class ReaderUser(FastHttpUser):
    """The clinician page polling a session: GET /v1/sessions/{id} at a constant rate.

    Closed loop (locust waits for each reply before the next wait), so a slow server slows
    the reader down: for an honest fixed-rate latency use benchmarks/load/fixed_rate.py.
    """

    network_timeout = 30.0
    connection_timeout = 10.0
    wait_time = constant_throughput(_env_float("LOAD_READER_RATE", 1.0))

    def on_start(self) -> None:
        Shared.setup()
        self.headers = _auth()
        ids = os.environ.get("LOAD_SESSION_IDS", "")
        self.pool = [s for s in ids.split(",") if s] or Shared.sessions

    @task
    def read(self) -> None:
        if not self.pool:
            return
        session_id = random.choice(self.pool)
        with self.client.get(
            f"/v1/sessions/{session_id}", headers=self.headers, name=SESSION, catch_response=True
        ) as response:
            if response.status_code != 200:
                _failed(response, f"status {response.status_code}")
