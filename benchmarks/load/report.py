"""Summarize one load run folder (scripts/load.sh): summary.json and a printed table.

.venv/bin/python -m benchmarks.load.report var/load/RUN
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks.load.cpu import Snapshot, usage
from benchmarks.load.scenario import read_records

PERCENTILES = (50, 95, 99)


def locust_endpoints(stats_json: Path) -> list[dict[str, Any]]:
    """Per-endpoint rows from locust's ``--json-file`` (its final stats; the CSV lags by 1 s).

    Percentiles by nearest rank over locust's histogram, whose buckets are exact below 100 ms,
    10 ms wide below 1 s and 100 ms wide above.
    """
    rows: list[dict[str, Any]] = []
    for entry in json.loads(stats_json.read_text()):
        histogram = sorted((int(ms), int(n)) for ms, n in entry["response_times"].items())
        rows.append(
            {
                "method": entry["method"],
                "name": entry["name"],
                "requests": int(entry["num_requests"]),
                "failures": int(entry["num_failures"]),
                **{f"p{q}_ms": _histogram_percentile(histogram, q) for q in PERCENTILES},
                "max_ms": round(float(entry["max_response_time"]), 1),
            }
        )
    return sorted(rows, key=lambda r: (r["name"], r["method"]))


def _histogram_percentile(histogram: list[tuple[int, int]], q: int) -> int | None:
    total = sum(n for _, n in histogram)
    if total == 0:
        return None
    rank, seen = max(1, math.ceil(q / 100 * total)), 0
    for value, n in histogram:
        seen += n
        if seen >= rank:
            return value
    return histogram[-1][0]


def interviews(records: list[dict[str, Any]], *, start: float, end: float) -> dict[str, Any]:
    """Interviews finished within [start, end] per minute, and the ones that failed."""
    done = [r for r in records if r.get("record") == "interview"]
    ok_in_window = [r for r in done if r["ok"] and start <= r["finished"] <= end]
    minutes = max(end - start, 1e-9) / 60
    durations = sorted(r["finished"] - r["started"] for r in done if r["ok"])
    return {
        "window_s": round(end - start, 1),
        "completed_in_window": len(ok_in_window),
        "completed_total": sum(1 for r in done if r["ok"]),
        "failed": sum(1 for r in done if not r["ok"]),
        "failed_reasons": sorted({r["reason"] for r in done if not r["ok"]}),
        "per_minute": round(len(ok_in_window) / minutes, 2),
        "answers_per_interview": (
            round(sum(r["turns"] for r in done if r["ok"]) / max(1, len(durations)), 2)
        ),
        "interview_s_p50": round(durations[len(durations) // 2], 1) if durations else None,
    }


def phase_window(records: list[dict[str, Any]]) -> tuple[float, float] | None:
    """When locust started the test and when its run time ran out (the locustfile notes both)."""
    marks = {r["event"]: r["at"] for r in records if r.get("record") == "phase"}
    if "start" in marks and "stopping" in marks:
        return marks["start"], marks["stopping"]
    return None


def answer_attempts(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Answer attempts by kind and HTTP status."""
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        if r.get("record", "answer") != "answer":
            continue
        by_status = counts.setdefault(r["kind"], {})
        by_status[str(r["status"])] = by_status.get(str(r["status"]), 0) + 1
    return counts


def turns_done(records: list[dict[str, Any]]) -> int:
    """Turns the interviews completed: each created session (turn 0) and each first answer
    attempt that got a 200 (replays and duplicates are no new turns)."""
    created = sum(1 for r in records if r.get("record") == "interview" and r.get("session_id"))
    answered = sum(
        1
        for r in records
        if r.get("record", "answer") == "answer" and r["kind"] == "first" and r["status"] == 200
    )
    return created + answered


def interview_cpu(run: Path, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """CPU per turn during the interviews, from the snapshots load.sh takes around locust.

    Per turn means the whole phase's CPU over its turns: the GETs and finalizes the clinicians
    send between turns are included (they are part of an interview).
    """
    before_path, after_path = run / "cpu_interviews_before.json", run / "cpu_interviews_after.json"
    if not (before_path.exists() and after_path.exists()):
        return None
    before, after = Snapshot.read(before_path), Snapshot.read(after_path)
    turns = turns_done(records)
    used = usage(before, after, wall_s=after.at - before.at, requests=turns)
    return {"turns": turns, "wall_s": round(after.at - before.at, 1), "usage": used}


def summarize(run: Path) -> dict[str, Any]:
    meta = json.loads((run / "meta.json").read_text())
    records = list(read_records(run / "answers.jsonl")) if (run / "answers.jsonl").exists() else []
    endpoints = locust_endpoints(run / "interview.json")
    window = phase_window(records) or (meta["interview_start"], meta["interview_end"])
    summary: dict[str, Any] = {
        "meta": meta,
        "interviews": interviews(records, start=window[0], end=window[1]),
        "endpoints": endpoints,
        "request_errors": sum(r["failures"] for r in endpoints),
        "backpressure_429": sum(r["requests"] for r in endpoints if r["name"].endswith("(429)")),
        "answer_attempts": answer_attempts(records),
    }
    for name in ("get_fixed_rate", "exactly_once"):
        path = run / f"{name}.json"
        summary[name] = json.loads(path.read_text()) if path.exists() else None
    summary["interview_cpu"] = interview_cpu(run, records)
    sweep = [json.loads(p.read_text()) for p in run.glob("get_fixed_rate_*.json")]
    summary["get_sweep"] = sorted(sweep, key=lambda g: g["target_rate_per_s"])
    return summary


def render(summary: dict[str, Any]) -> str:
    lines = []
    i = summary["interviews"]
    lines.append(
        f"interviews: {i['completed_in_window']} completed in {i['window_s']} s = "
        f"{i['per_minute']}/min ({i['completed_total']} in all, {i['failed']} failed)"
    )
    lines.append(
        f"request errors: {summary['request_errors']}; 429 (retried): {summary['backpressure_429']}"
    )
    lines.append(f"{'endpoint':<48} {'n':>6} {'fail':>5} {'p50':>8} {'p95':>8} {'p99':>8} ms")
    for r in summary["endpoints"]:
        lines.append(
            f"{r['method'] + ' ' + r['name']:<48} {r['requests']:>6} {r['failures']:>5} "
            f"{r['p50_ms']!s:>8} {r['p95_ms']!s:>8} {r['p99_ms']!s:>8}"
        )
    cpu = summary.get("interview_cpu")
    if cpu:
        parts = [
            f"{name} {u['cpu_ms_per_request']} ms/turn ({u['cores']} cores)"
            for name, u in cpu["usage"].items()
            if name != "machine" and isinstance(u, dict)
        ]
        lines.append(f"interview CPU over {cpu['turns']} turns: {', '.join(parts)}")
    once = summary.get("exactly_once")
    if once:
        lines.append(
            f"exactly once: {'OK' if once['ok'] else 'FAILED'}: {once['stored_once']}/"
            f"{once['acknowledged']} acknowledged answers stored once, {once['replays']} replays "
            f"({once['replays_consistent']} identical), problems: {len(once['problems'])}"
        )
    for get in [summary.get("get_fixed_rate"), *summary.get("get_sweep", [])]:
        if not get:
            continue
        lat = get["latency_ms"]
        lines.append(
            f"GET fixed rate: {get['achieved_rate_per_s']}/{get['target_rate_per_s']} req/s for "
            f"{get['duration_s']} s: p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms, "
            f"errors {get['errors']}; goal p99 < {get['goal_p99_ms']} ms: "
            f"{'met' if get['meets_goal'] else 'NOT met'}"
        )
        usage = get.get("cpu") or {}
        parts = [
            f"{name} {u['cores']} cores ({u['cpu_ms_per_request']} ms/req)"
            for name, u in usage.items()
            if name != "machine" and isinstance(u, dict)
        ]
        machine = usage.get("machine") or {}
        if parts:
            lines.append(
                f"  CPU: {', '.join(parts)}; machine busy {machine.get('busy_fraction')} "
                f"of {machine.get('cores')} cores"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    run = Path((argv or sys.argv[1:])[0])
    summary = summarize(run)
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
