"""The load scenario's pure logic: cases, answers, the exactly-once check, latency summaries."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from app.sessions.schemas import AnswerIn, SessionCreate
from benchmarks.load.fixed_rate import Http11Connection, Sample, summarize
from benchmarks.load.report import (
    interview_cpu,
    interviews,
    locust_endpoints,
    phase_window,
    turns_done,
)
from benchmarks.load.scenario import (
    AnswerAttempt,
    RecordWriter,
    StoredTurn,
    answer_sha256,
    case_from_row,
    check_exactly_once,
    load_cases,
    percentile,
    plausible_answer,
    read_records,
    session_ids,
)


def test_every_shipped_case_opens_a_valid_session() -> None:
    cases = load_cases()
    assert len(cases) > 1000
    for case in cases:
        body = SessionCreate.model_validate(case.session_body())
        assert body.question_source == "bank"
        assert body.question_bank_name in {"internal_medicine", "pediatrics", "neurology"}
        assert len(body.candidates) == 4
        for fact in case.facts[:3]:
            AnswerIn(question_id="x", answer=plausible_answer(fact, case.facts, random.Random(0)))


def test_options_override_and_generated_source_drops_the_bank() -> None:
    case = load_cases(limit=1)[0]
    body = case.session_body({"question_source": "generated", "max_questions": 1})
    assert "question_bank_name" not in body
    assert SessionCreate.model_validate(body).max_questions == 1


def test_rows_that_cannot_open_an_interview_are_skipped() -> None:
    row: dict[str, Any] = {"id": 1, "question": "Dx?", "options": {"A": "x", "B": "y"}}
    assert case_from_row({**row, "context": []}) is None
    assert case_from_row({**row, "context": ["A man."], "options": {"A": "x", "B": "X"}}) is None
    case = case_from_row({**row, "context": ["A man."], "patient": {"age": "study"}})
    assert case is not None and case.age is None and case.bank == "internal_medicine"


def test_plausible_answer_picks_the_matching_fact_or_says_no() -> None:
    facts = ["Patient smokes 1 pack of cigarettes per day", "Heart rate is 111/min."]
    rng = random.Random(0)
    assert plausible_answer("Do you smoke cigarettes?", facts, rng) == facts[0] + "."
    assert plausible_answer("Any recent travel abroad?", facts, rng).startswith(
        ("No", "I'm", "Not")
    )


def _attempt(
    session: str, step: int, key: str, status: int, *, text: str = "yes", version: int = 2
) -> dict[str, Any]:
    return {
        "record": "answer",
        "session_id": session,
        "step": step,
        "question_id": f"{session}-q{step}",
        "idempotency_key": key,
        "answer_sha256": answer_sha256(text),
        "kind": "first",
        "status": status,
        "version": version if status == 200 else None,
        "next_question_id": f"{session}-q{step + 1}" if status == 200 else None,
    }


def _turn(session: str, step: int, text: str = "yes") -> StoredTurn:
    return StoredTurn(session, step, f"{session}-q{step}", answer_sha256(text))


def test_exactly_once_passes_with_replays_and_a_lost_reply() -> None:
    records = [
        _attempt("s1", 0, "k0", 200),
        _attempt("s1", 0, "k0", 200),  # a replay with the same reply
        _attempt("s1", 0, "k0", 409),  # a duplicate that lost the race
        _attempt("s1", 1, "k1", 200, version=3),
        _attempt("s1", 2, "k2", 0),  # timed out, but it was applied
        _attempt("s2", 0, "k3", 0),  # timed out, never applied
        {"record": "interview", "session_id": "s1"},
    ]
    stored = [_turn("s1", 0), _turn("s1", 1), _turn("s1", 2)]
    keys = [("s1", "k0"), ("s1", "k1"), ("s1", "k2")]
    report = check_exactly_once(records, stored, keys)
    assert report.ok, report.problems
    assert (report.acknowledged, report.stored_once, report.replays) == (2, 2, 1)
    assert (report.unacknowledged_stored, report.unacknowledged_absent) == (1, 1)


def test_exactly_once_fails_on_a_lost_answer_a_wrong_text_or_a_stray_answer() -> None:
    records = [_attempt("s1", 0, "k0", 200), _attempt("s1", 1, "k1", 200, text="no")]
    assert not check_exactly_once(records, [_turn("s1", 0)], [("s1", "k0")]).ok
    wrong = check_exactly_once(
        records, [_turn("s1", 0), _turn("s1", 1)], [("s1", "k0"), ("s1", "k1")]
    )
    assert any("another answer text" in p for p in wrong.problems)
    stray = check_exactly_once(records[:1], [_turn("s1", 0), _turn("s1", 1)], [("s1", "k0")])
    assert any("match a recorded answer" in p for p in stray.problems)
    no_record = check_exactly_once(records[:1], [_turn("s1", 0)], [])
    assert any("idempotency records" in p for p in no_record.problems)


def test_a_request_cut_by_the_end_of_the_run_counts_as_unacknowledged() -> None:
    """Locust kills users still in a request at its stop timeout: their outcome is never
    recorded, only the "sent" record written before the request went out."""
    sent = {**_attempt("s1", 1, "k1", 0), "record": "sent"}
    records = [_attempt("s1", 0, "k0", 200), sent]
    applied = check_exactly_once(
        records, [_turn("s1", 0), _turn("s1", 1)], [("s1", "k0"), ("s1", "k1")]
    )
    assert applied.ok, applied.problems
    assert (applied.cut, applied.unacknowledged_stored, applied.attempts) == (1, 1, 1)
    never = check_exactly_once(records, [_turn("s1", 0)], [("s1", "k0")])
    assert never.ok and never.unacknowledged_absent == 1
    # Without the "sent" record the same stored answer has no sender: the check fails.
    assert not check_exactly_once(records[:1], [_turn("s1", 0), _turn("s1", 1)], []).ok
    # A "sent" record next to an outcome adds nothing: the outcome decides.
    acked = check_exactly_once([sent, *records], [_turn("s1", 0)], [("s1", "k0")])
    assert acked.cut == 1 and acked.ok


def test_exactly_once_fails_when_a_replay_differs() -> None:
    records = [_attempt("s1", 0, "k0", 200), _attempt("s1", 0, "k0", 200, version=5)]
    report = check_exactly_once(records, [_turn("s1", 0)], [("s1", "k0")])
    assert not report.ok and report.replays == 1 and report.replays_consistent == 0


def test_records_round_trip(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path / "r" / "answers.jsonl")
    writer.write(AnswerAttempt("s1", 0, "q", "k", answer_sha256("yes"), "first", 200, 2, "q2"))
    writer.write(AnswerAttempt("s2", 0, "q", "k", answer_sha256("yes"), "first", 200))
    writer.close()
    records = list(read_records(tmp_path / "r" / "answers.jsonl"))
    assert session_ids(records) == ["s1", "s2"]
    assert "yes" not in (tmp_path / "r" / "answers.jsonl").read_text()


def test_percentiles_and_the_fixed_rate_goal() -> None:
    assert percentile([], 99) is None
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([5.0, 1.0], 50) == 1.0
    fast = [Sample(i / 100, 5.0, 4.0, 0.5, 200) for i in range(100)]
    summary = summarize(fast, rate=100, duration=1, goal_p99_ms=25)
    assert summary["meets_goal"] and summary["latency_ms"]["p99"] == 5.0
    slow = [*fast[:98], Sample(0.98, 30.0, 29.0, 0.5, 200), Sample(0.99, 1.0, 1.0, 0.0, 0, "E")]
    summary = summarize(slow, rate=100, duration=1, goal_p99_ms=25)
    assert not summary["meets_goal"] and summary["errors"] == 1
    assert summary["error_kinds"] == {"E": 1}


def test_locust_json_stats(tmp_path: Path) -> None:
    path = tmp_path / "interview.json"
    entry = {
        "name": "/v1/sessions",
        "method": "POST",
        "num_requests": 10,
        "num_failures": 1,
        "max_response_time": 9012.5,
        "response_times": {"4100": 5, "4200": 4, "9000": 1},
    }
    path.write_text(
        json.dumps([entry, {**entry, "name": "/empty", "num_requests": 0, "response_times": {}}])
    )
    rows = locust_endpoints(path)
    assert rows[1] == {
        "method": "POST",
        "name": "/v1/sessions",
        "requests": 10,
        "failures": 1,
        "p50_ms": 4100,
        "p95_ms": 9000,
        "p99_ms": 9000,
        "max_ms": 9012.5,
    }
    assert rows[0]["p99_ms"] is None


def test_phase_window_and_interviews_per_minute() -> None:
    records: list[dict[str, Any]] = [
        {"record": "phase", "event": "start", "at": 100.0},
        {"record": "phase", "event": "stopping", "at": 220.0},
        *(
            {
                "record": "interview",
                "ok": True,
                "started": 100.0,
                "finished": f,
                "turns": 3,
                "reason": "",
            }
            for f in (130.0, 160.0, 200.0, 230.0)
        ),
        {
            "record": "interview",
            "ok": False,
            "started": 100.0,
            "finished": 150.0,
            "turns": 1,
            "reason": "answer",
        },
    ]
    window = phase_window(records)
    assert window == (100.0, 220.0)
    summary = interviews(records, start=window[0], end=window[1])
    assert summary["completed_in_window"] == 3 and summary["per_minute"] == 1.5
    assert summary["completed_total"] == 4 and summary["failed"] == 1


async def test_the_fixed_rate_client_reopens_a_connection_the_server_closed_while_idle() -> None:
    served: list[bytes] = []

    async def one_reply_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        served.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()  # like uvicorn after its keep-alive timeout

    server = await asyncio.start_server(one_reply_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        connection = Http11Connection("127.0.0.1", port, b"Host: x\r\n\r\n")
        assert await connection.get("/a") == 200
        await asyncio.sleep(0.05)
        assert await connection.get("/b") == 200
        connection.close()
    assert [s.split(b" ")[1] for s in served] == [b"/a", b"/b"]


def test_cpu_per_turn_counts_created_sessions_and_first_answers(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [
        {"record": "interview", "session_id": "s1"},
        {"record": "interview", "session_id": None},  # failed before it was created
        _attempt("s1", 0, "k0", 200),
        {**_attempt("s1", 0, "k0", 200), "kind": "replay"},
        _attempt("s1", 1, "k1", 429),
        _attempt("s1", 1, "k1", 200),
    ]
    assert turns_done(records) == 3
    snapshot = {"process_s": {"api": 10.0}, "machine_busy_s": 100.0, "machine_total_s": 400.0}
    (tmp_path / "cpu_interviews_before.json").write_text(json.dumps({**snapshot, "at": 0.0}))
    after = {**snapshot, "process_s": {"api": 10.3}, "machine_busy_s": 101.0, "at": 2.0}
    after["machine_total_s"] = 404.0
    (tmp_path / "cpu_interviews_after.json").write_text(json.dumps(after))
    cpu = interview_cpu(tmp_path, records)
    assert cpu is not None and cpu["turns"] == 3
    assert cpu["usage"]["api"]["cpu_ms_per_request"] == 100.0  # 0.3 s over 3 turns
    assert cpu["usage"]["machine"]["busy_fraction"] == 0.25
