"""After a load run: every acknowledged answer is stored exactly once, nothing else is.

    .venv/bin/python -m benchmarks.load.check_exactly_once --records var/load/RUN/answers.jsonl \
        --database-url "$PURSUIT_DATABASE_URL" --out var/load/RUN/exactly_once.json

Reads the answered turns and idempotency records of the recorded sessions from PostgreSQL.
The answer text never leaves the database: it is compared by its SHA-256, computed there.
Exit status 1 when the check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from benchmarks.load.scenario import StoredTurn, check_exactly_once, read_records, session_ids

TURNS_SQL = """
SELECT session_id::text, step, question_id::text,
       encode(sha256(convert_to(answer, 'UTF8')), 'hex')
FROM interview_turns
WHERE answer IS NOT NULL AND session_id = ANY(%s::uuid[])
"""
KEYS_SQL = """
SELECT session_id::text, key FROM idempotency_records WHERE session_id = ANY(%s::uuid[])
"""
# Independent of the client's records: no step answered twice, no answer past the session's step.
SANITY_SQL = """
SELECT
  (SELECT count(*) FROM (SELECT 1 FROM interview_turns WHERE session_id = ANY(%(ids)s::uuid[])
     GROUP BY session_id, step HAVING count(*) > 1) d) AS duplicate_steps,
  (SELECT count(*) FROM interview_turns t JOIN interview_sessions s ON s.id = t.session_id
     WHERE s.id = ANY(%(ids)s::uuid[]) AND t.answer IS NOT NULL AND t.step >= s.step)
     AS answers_past_step,
  (SELECT count(*) FROM interview_sessions WHERE id = ANY(%(ids)s::uuid[])) AS sessions_found
"""


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (postgresql+asyncpg://...) as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    records = list(read_records(args.records))
    answers = [r for r in records if r.get("record", "answer") in ("answer", "sent")]
    ids = session_ids(answers)
    with psycopg.connect(libpq_url(args.database_url)) as conn:
        stored = [
            StoredTurn(session_id=s, step=step, question_id=q, answer_sha256=h)
            for s, step, q, h in conn.execute(TURNS_SQL, (ids,)).fetchall()
        ]
        keys = [(s, k) for s, k in conn.execute(KEYS_SQL, (ids,)).fetchall()]
        row = conn.execute(SANITY_SQL, {"ids": ids}).fetchone()
    report = check_exactly_once(answers, stored, keys)
    duplicate_steps, answers_past_step, sessions_found = row if row else (0, 0, 0)
    if duplicate_steps:
        report.problems.append(f"{duplicate_steps} (session, step) pairs stored twice")
    if answers_past_step:
        report.problems.append(f"{answers_past_step} answers at or past their session's step")
    if sessions_found != len(ids):
        report.problems.append(f"{len(ids) - sessions_found} recorded sessions not in the database")
    result = {**report.as_dict(), "answered_turns_in_database": len(stored)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
