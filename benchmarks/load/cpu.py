"""CPU time of named processes and of the whole machine, from /proc (Linux only).

Used by the fixed-rate run to say what a request costs in CPU (API, PostgreSQL, Redis, the
client itself) and how busy the machine was meanwhile, so that a latency figure measured on
a shared machine can be read against what else was running.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Snapshot:
    process_s: dict[str, float] = field(default_factory=dict)  # name -> CPU seconds so far
    machine_busy_s: float = 0.0
    machine_total_s: float = 0.0
    at: float = 0.0  # wall-clock time of the snapshot (time.time())

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def read(cls, path: Path) -> Snapshot:
        return cls(**json.loads(path.read_text()))


def _process_stats() -> dict[int, tuple[str, list[str]]]:
    """pid -> (command name, the fields after it) of every live process."""
    stats = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name, _, rest = stat.partition("(")[2].rpartition(")")
        stats[int(entry.name)] = (name, rest.split())
    return stats


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process tree so far: the live processes under ``pid`` (uvicorn's
    workers, PostgreSQL's backends) and the children they have already reaped (their time is
    in the reaper's cutime and cstime), so a backend that came and went is counted too."""
    stats = _process_stats()
    children: dict[int, list[int]] = {}
    for child, (_, fields) in stats.items():
        children.setdefault(int(fields[1]), []).append(child)  # field 4: the parent's pid
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            # Fields 14-17: utime, stime, cutime, cstime, in clock ticks.
            total += sum(int(x) for x in stats[current][1][11:15]) / TICKS
        todo.extend(children.get(current, []))
    return total


def oldest_pid(command: str) -> int | None:
    """The pid of the oldest live process whose command name is ``command``, if any."""
    started = [
        (int(fields[19]), pid)  # field 22: start time
        for pid, (name, fields) in _process_stats().items()
        if name == command
    ]
    return min(started)[1] if started else None


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, all cores."""
    try:
        fields = [int(x) for x in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return (total - idle) / TICKS, total / TICKS


def snapshot(pids: dict[str, int]) -> Snapshot:
    """CPU so far of each named process tree, and of the machine."""
    process = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    busy, total = machine_cpu_s()
    return Snapshot(process_s=process, machine_busy_s=busy, machine_total_s=total, at=time.time())


def usage(before: Snapshot, after: Snapshot, *, wall_s: float, requests: int) -> dict[str, object]:
    """What each named process used between two snapshots: cores, and ms per request."""
    out: dict[str, object] = {}
    for name, start in before.process_s.items():
        used = max(0.0, after.process_s.get(name, start) - start)
        out[name] = {
            "cpu_s": round(used, 2),
            "cores": round(used / wall_s, 3) if wall_s > 0 else None,
            "cpu_ms_per_request": round(1000 * used / requests, 3) if requests else None,
        }
    busy = after.machine_busy_s - before.machine_busy_s
    total = after.machine_total_s - before.machine_total_s
    out["machine"] = {
        "busy_fraction": round(busy / total, 3) if total > 0 else None,
        "busy_cores": round(busy / wall_s, 2) if wall_s > 0 else None,
        "cores": os.cpu_count(),
    }
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.load.cpu --watch api=PID ... --out FILE``: one snapshot as JSON
    (scripts/load.sh takes one before and one after the interviews)."""
    import argparse

    parser = argparse.ArgumentParser(description="Snapshot the CPU time of process trees.")
    parser.add_argument("--watch", action="append", default=[], help="NAME=PID (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pids = {name: int(pid) for name, _, pid in (w.partition("=") for w in args.watch)}
    snapshot(pids).write(args.out)


if __name__ == "__main__":
    main()
