"""Markdown tables for docs/results-kb.md from the reports of scripts/bench-kb-runs.sh.

Usage: .venv/bin/python scripts/kb_tables.py var/kb/<run> [var/kb/<run> ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BUDGETS = (1, 3, 5, 8, 10, 12, 15)
PAIRS = (
    ("cip", "ip"),
    ("cip-nominal", "ip"),
    ("cip", "random"),
    ("cip-nominal", "random"),
    ("ip", "random"),
)


def _diff(report: dict[str, Any], policy: str, base: str, b: int) -> str:
    entry = report["by_budget"]["policies"].get(policy, {}).get("vs", {}).get(base)
    if entry is None or b >= len(entry["accuracy"]["diff"]):
        return "-"
    d, (lo, hi) = entry["accuracy"]["diff"][b], entry["accuracy"]["ci"][b]
    mark = " **+**" if lo > 0 else (" **-**" if hi < 0 else "")
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"


def tables(path: Path) -> str:
    report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    s = report["settings"]
    budgets = [b for b in BUDGETS if b <= s["max_questions"]]
    lines = [
        f"### {path.name}",
        "",
        f"K {s['candidates']}, world seed {s['world_seed']}, presenting "
        f"{s['differential']['presenting']}, {s['differential']['terms']} terms, "
        f"objective {s['objective']}, {s['test_games']} test / {s['calibration_games']} "
        f"calibration games, early stop {s['early_stop']}.",
        "",
        "Accuracy at budget b (serving stop rule, each game at min(stop, b)):",
        "",
        "| policy | " + " | ".join(f"b={b}" for b in budgets) + " | final q | stops | min cov p |",
        "|---" * (len(budgets) + 4) + "|",
    ]
    for policy, entry in report["by_budget"]["policies"].items():
        final = report["policies"][policy]["final"]
        stops = ", ".join(f"{k} {v}" for k, v in sorted(final.get("stop_reasons", {}).items()))
        min_p = min(step["coverage_p_value"] for step in report["policies"][policy]["steps"])
        lines.append(
            f"| {policy} | "
            + " | ".join(f"{entry['accuracy'][b]:.3f}" for b in budgets)
            + f" | {final['mean_questions']:.2f} | {stops} | {min_p:.3f} |"
        )
    a = report["all_terms"]
    lines += [
        "",
        f"None (prior): accuracy {1 / s['candidates']:.3f}. All {a['questions']} terms answered: "
        f"accuracy {a['accuracy']:.3f} [{a['accuracy_ci'][0]:.3f}, {a['accuracy_ci'][1]:.3f}], "
        f"coverage {a['coverage']:.3f}, mean set {a['mean_set_size']:.2f}.",
        "",
        "Paired accuracy differences (95% interval; **+**/**-**: interval excludes 0):",
        "",
        "| pair | " + " | ".join(f"b={b}" for b in budgets) + " |",
        "|---" * (len(budgets) + 1) + "|",
    ]
    for policy, base in PAIRS:
        if policy in report["by_budget"]["policies"]:
            lines.append(
                f"| {policy} - {base} | "
                + " | ".join(_diff(report, policy, base, b) for b in budgets)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    for arg in argv:
        print(tables(Path(arg)))


if __name__ == "__main__":
    main(sys.argv[1:])
