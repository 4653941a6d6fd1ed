"""GET /v1/sessions/{id} at a fixed rate, open loop: honest latency under a set arrival rate.

    .venv/bin/python -m benchmarks.load.fixed_rate --url http://127.0.0.1:8091 \
        --key-file KEYFILE --records var/load/RUN/answers.jsonl --rate 300 --duration 60

Request i is due at t0 + i/rate whatever happened to the requests before it (open loop), and
its latency is measured from that due time, so a stalled server is charged for every request
that had to wait for it (no coordinated omission). A closed-loop tool (locust's
constant_throughput, each user waiting for its reply before the next) lowers the rate when the
server slows and so hides exactly the stalls the p99 is meant to show.

Due requests queue in the client for one of ``--max-connections`` keep-alive connections; one
still queued ``--timeout`` s after its due time is counted as an error without being sent.
``lag`` (send time minus due time) says whether the client and its connections kept up; the
service time (reply minus send) is reported too. Times come from time.perf_counter() (the
event loop's clock is millisecond-grained under uvloop). The client is a few lines of HTTP/1.1
over asyncio streams rather than httpx, whose CPU per request was 2-5 ms here and whose
connection pool slows down badly with thousands of waiting requests: on two shared cores the
client's own cost is part of what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.load import cpu
from benchmarks.load.scenario import percentile, read_records, session_ids

QUEUED_PAST_TIMEOUT = "QueuedPastTimeout"


@dataclass(frozen=True)
class Sample:
    due: float  # seconds since the start of the measured window
    latency_ms: float  # reply time - due time
    service_ms: float  # reply time - send time
    lag_ms: float  # send time - due time
    status: int  # 0: no reply (timeout, connection error)
    error: str = ""


def summarize(
    samples: list[Sample], *, rate: float, duration: float, goal_p99_ms: float
) -> dict[str, Any]:
    """Percentiles (nearest rank), achieved rate and errors of the measured window."""
    latencies = [s.latency_ms for s in samples]
    ok = [s for s in samples if s.status == 200]
    errors = [s for s in samples if s.status != 200]
    last_reply = max((s.due + s.latency_ms / 1000 for s in samples), default=0.0)
    result: dict[str, Any] = {
        "target_rate_per_s": rate,
        "duration_s": duration,
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(errors),
        "not_sent": sum(1 for s in errors if s.error == QUEUED_PAST_TIMEOUT),
        "error_statuses": _count(str(s.status) for s in errors),
        "error_kinds": _count(s.error for s in errors if s.error),
        "achieved_rate_per_s": round(len(ok) / max(duration, last_reply), 2) if samples else 0.0,
        "goal_p99_ms": goal_p99_ms,
    }
    for name, values in (
        ("latency_ms", latencies),
        ("service_ms", [s.service_ms for s in samples if s.error != QUEUED_PAST_TIMEOUT]),
        ("lag_ms", [s.lag_ms for s in samples]),
    ):
        result[name] = {
            f"p{q:g}": _round(percentile(values, q)) for q in (50, 90, 95, 99, 99.9, 100)
        }
    p99 = result["latency_ms"]["p99"]
    result["meets_goal"] = bool(
        p99 is not None and p99 < goal_p99_ms and not errors and len(samples) > 0
    )
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


class Http11Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs: a fraction of httpx's CPU per
    request, which matters when the client shares two cores with the server it measures."""

    def __init__(self, host: str, port: int, headers: bytes) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """The reply's status; the body is read and dropped.

        A reused connection that the server closed while idle (uvicorn's keep-alive timeout
        is 5 s) is reopened and the GET sent again, as any HTTP client does for a safe method.
        """
        reused = self.writer is not None
        try:
            return await self._get(path)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            partial = getattr(exc, "partial", b"")
            if not reused or partial:
                raise
        return await self._get(path)

    async def _get(self, path: str) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.headers)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        if b"transfer-encoding: chunked" in head:
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        else:
            start = head.find(b"content-length:")
            if start < 0:
                raise OSError("reply without Content-Length")
            length = int(head[start + 15 : head.index(b"\r\n", start)])
            await reader.readexactly(length)
        if b"connection: close" in head:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(
    *,
    url: str,
    key: str,
    sessions: list[str],
    rate: float,
    duration: float,
    warmup: float,
    request_timeout_s: float,
    max_connections: int,
    watch_pids: dict[str, int] | None = None,
) -> tuple[list[Sample], dict[str, object]]:
    """Send GETs at ``rate`` for ``warmup`` + ``duration`` s.

    Returns the samples of the measured part and the CPU used meanwhile by the client, the
    watched processes and the machine.
    """
    if not sessions:
        raise SystemExit("no sessions to read")
    parsed = urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname is None:
        raise SystemExit("--url must be http://HOST[:PORT]")
    host, port = parsed.hostname, parsed.port or 80
    headers = f"Host: {parsed.netloc}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    paths = [f"/v1/sessions/{s}" for s in sessions]
    samples: list[Sample] = []
    total = int((warmup + duration) * rate)
    # Due requests wait in this FIFO for one of max_connections senders, each with its own
    # keep-alive connection, opened before the clock starts.
    due_queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    connections = [Http11Connection(host, port, headers) for _ in range(max_connections)]
    for i, connection in enumerate(connections):
        await connection.get(paths[i % len(paths)])
    t0 = time.perf_counter() + 0.2

    async def sender(connection: Http11Connection) -> None:
        while (item := await due_queue.get()) is not None:
            i, due = item
            sent = time.perf_counter()
            status, error = 0, ""
            if sent - due > request_timeout_s:
                error = QUEUED_PAST_TIMEOUT  # would have timed out: do not pile on
            else:
                try:
                    async with asyncio.timeout(request_timeout_s):
                        status = await connection.get(paths[i % len(paths)])
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                    error = type(exc).__name__
                    connection.close()
            done = time.perf_counter()
            offset = due - t0 - warmup
            if offset >= 0:
                samples.append(
                    Sample(
                        due=offset,
                        latency_ms=(done - due) * 1000,
                        service_ms=(done - sent) * 1000,
                        lag_ms=(sent - due) * 1000,
                        status=status,
                        error=error,
                    )
                )
        connection.close()

    senders = [asyncio.create_task(sender(c)) for c in connections]
    first_measured = math.ceil(warmup * rate)
    before, client_before, wall_before = cpu.snapshot({}), 0.0, 0.0
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i == first_measured:
            before = cpu.snapshot(watch_pids or {})
            client_before, wall_before = time.process_time(), time.perf_counter()
        due_queue.put_nowait((i, due))
    for _ in senders:
        due_queue.put_nowait(None)
    await asyncio.gather(*senders)
    after = cpu.snapshot(watch_pids or {})
    wall = time.perf_counter() - wall_before
    # Per request that reached the server: one that waited past the timeout cost it nothing.
    sent = sum(1 for s in samples if s.error != QUEUED_PAST_TIMEOUT)
    usage = cpu.usage(before, after, wall_s=wall, requests=sent)
    client_cpu = time.process_time() - client_before
    usage["client"] = {
        "cpu_s": round(client_cpu, 2),
        "cores": round(client_cpu / wall, 3) if wall > 0 else None,
        "cpu_ms_per_request": round(1000 * client_cpu / sent, 3) if sent else None,
    }
    return samples, usage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key-file", type=Path, help="default: $LOAD_API_KEY")
    parser.add_argument("--records", type=Path, help="answer records: read their sessions")
    parser.add_argument("--session", action="append", default=[], help="a session id (repeat)")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--goal-p99-ms", type=float, default=25.0)
    parser.add_argument(
        "--watch",
        action="append",
        default=[],
        help="NAME=PID: report the CPU of that process tree (repeat)",
    )
    parser.add_argument("--out", type=Path, help="summary JSON; samples go beside it as CSV")
    args = parser.parse_args(argv)

    key = args.key_file.read_text().strip() if args.key_file else os.environ.get("LOAD_API_KEY")
    if not key:
        raise SystemExit("give --key-file or set LOAD_API_KEY")
    sessions = list(args.session)
    if args.records:
        sessions += session_ids(r for r in read_records(args.records) if r.get("session_id"))

    with contextlib.suppress(ImportError):
        import uvloop  # the client's own overhead is part of what it measures: keep it small

        uvloop.install()
    watch_pids = {n: int(p) for n, _, p in (w.partition("=") for w in args.watch) if p}
    samples, usage = asyncio.run(
        run(
            url=args.url,
            key=key,
            sessions=sessions,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            request_timeout_s=args.timeout,
            max_connections=args.max_connections,
            watch_pids=watch_pids,
        )
    )
    summary = summarize(
        samples, rate=args.rate, duration=args.duration, goal_p99_ms=args.goal_p99_ms
    )
    summary.update(
        sessions=len(sessions),
        warmup_s=args.warmup,
        max_connections=args.max_connections,
        cpu=usage,
    )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        with args.out.with_suffix(".csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["due_s", "latency_ms", "service_ms", "lag_ms", "status", "error"])
            for s in sorted(samples, key=lambda s: s.due):
                writer.writerow(
                    [
                        f"{s.due:.4f}",
                        f"{s.latency_ms:.3f}",
                        f"{s.service_ms:.3f}",
                        f"{s.lag_ms:.3f}",
                        s.status,
                        s.error,
                    ]
                )


if __name__ == "__main__":
    main()
