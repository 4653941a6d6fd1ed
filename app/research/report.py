"""Benchmark reports from plain per-case records: report.json, report.md and PNG plots.

Shared by the 20 Questions bench (``pursuit bench20q``) and the MediQ bench. A bench hands
over one ``CaseRecord`` per (policy, test case): the outcome at every step 0..T_i of the
case's interview run without early stopping (is the top label right, is the true label in
the calibrated set, how big is the set) and the step at which the serving stop rule ended it.

Two views of the same records:

- ``steps[k]`` (fixed step): every case that reached step k, at step k. This is where split
  conformal promises coverage >= 1 - alpha (per step; anytime mode: at every step at once),
  and ``coverage_p_value`` tests it. ``mean_questions`` is k; ``budget_*`` fields give the
  serving view with a budget of k questions: each case at ``min(stop_step, k)``.
- ``final``: every case at its own stop (singleton set, budget, no gain, ...). Coverage there
  is guaranteed only by anytime calibration; ``step`` is null.
- ``final_singleton``: every case at its first singleton set, else its last step (the stop
  rule without policy-specific rules such as "no gain"), same fields.
- ``per_label`` (when every record carries its true ``label``): coverage of the cases of
  each true label at every step and at the stop, with the one-sided binomial p-value of
  "this label's coverage >= 1 - alpha" (``per_label_coverage``). The conformal guarantee is
  marginal over labels; this shows which labels it under-covers.
- ``by_budget`` (when ``build_report`` gets ``baselines``): accuracy and coverage at every
  budget b = 0..T with each case at min(its stop, b), and every policy's paired difference
  against each baseline over the same cases with a normal 95% interval on the per-case
  differences (``paired_by_budget``, which needs nothing but per-case, per-budget outcomes).

``report.json``::

    {"alpha": a, "model": m, "prompt_version": v, "cases": n, "confidence": 0.95,
     "target_coverage": 1 - a, "policies": {"cip": {"steps": [{"step": k, "n": n_k,
     "accuracy": x, "coverage": c, "coverage_ci": [lo, hi], "mean_set_size": s,
     "mean_questions": q, ...}, ...], "final": {...same fields...}}, ...}, ...extra}
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from app.conformal import clopper_pearson
from app.conformal.rank import AlphaLike, conformal_rank

__all__ = [
    "BASELINES",
    "CaseRecord",
    "PairedDifference",
    "StepOutcome",
    "binomial_p_value",
    "budget_view",
    "build_report",
    "coverage_p_value",
    "paired_by_budget",
    "paired_difference",
    "per_label_coverage",
    "render_by_budget",
    "render_markdown",
    "render_per_label",
    "render_sweep_markdown",
    "summarise_policy",
    "write_report",
    "write_sweep_report",
]

CONFIDENCE = 0.95
_PLOT_DPI = 90
_PLOT_SIZE = (9.0, 6.0)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """One case at one step: top label right, true label in the set, set size."""

    correct: bool
    covered: bool
    set_size: int


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """One test case under one policy: steps 0..T_i (no early stop) and the serving stop."""

    policy: str
    case_id: str
    steps: tuple[StepOutcome, ...]
    stop_step: int
    stop_reason: str = ""
    label: str | None = None  # the true label, for per-label coverage (None: not reported)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a case record needs at least step 0")
        if not 0 <= self.stop_step < len(self.steps):
            raise ValueError(f"stop_step {self.stop_step} outside steps 0..{len(self.steps) - 1}")


def coverage_p_value(covered: int, n_test: int, n_cal: int, alpha: AlphaLike) -> float:
    """One-sided p-value of "coverage >= the split-conformal guarantee" for covered / n_test.

    Under exchangeability and without ties, the coverage of the rank-r threshold from n_cal
    scores is Beta(r, n_cal + 1 - r) given the calibration set, so the covered count of
    n_test fresh cases is BetaBinomial(n_test, r, n_cal + 1 - r): this accounts for the
    randomness of both the calibration and the test cases. Ties only raise coverage, so the
    lower tail stays valid. Returns P(X <= covered); an infinite threshold (r > n_cal,
    the full set) gives 1.
    """
    if n_test < 1 or not 0 <= covered <= n_test:
        raise ValueError(f"need 0 <= covered <= n_test and n_test >= 1, got {covered}/{n_test}")
    r = conformal_rank(n_cal, alpha)
    if r > n_cal:
        return 1.0
    # scipy.special, not scipy.stats: the latter takes seconds to import.
    from scipy.special import betaln, gammaln

    a, b = float(r), float(n_cal + 1 - r)
    x = np.arange(covered + 1, dtype=np.float64)
    log_pmf = (
        gammaln(n_test + 1.0)
        - gammaln(x + 1.0)
        - gammaln(n_test - x + 1.0)
        + betaln(x + a, n_test - x + b)
        - betaln(a, b)
    )
    return float(min(1.0, np.exp(log_pmf).sum()))


def _stats(
    outcomes: Sequence[StepOutcome], questions: Sequence[int], confidence: float
) -> dict[str, Any]:
    n = len(outcomes)
    covered = sum(o.covered for o in outcomes)
    low, high = clopper_pearson(covered, n, confidence)
    return {
        "n": n,
        "accuracy": sum(o.correct for o in outcomes) / n,
        "coverage": covered / n,
        "covered": covered,
        "coverage_ci": [low, high],
        "mean_set_size": float(np.mean([o.set_size for o in outcomes])),
        "mean_questions": float(np.mean(questions)),
    }


def summarise_policy(
    records: Sequence[CaseRecord],
    *,
    confidence: float = CONFIDENCE,
    calibration_n: Sequence[int] | None = None,
    step_alpha: AlphaLike | None = None,
) -> dict[str, Any]:
    """``{"steps": [...], "final": {...}}`` for one policy's records.

    With ``calibration_n`` (calibration cases per step) and ``step_alpha`` (the alpha each
    step's threshold was computed at), step entries gain ``n_cal`` and ``coverage_p_value``.
    """
    if not records:
        raise ValueError("no records")
    horizon = max(len(r.steps) for r in records)
    steps: list[dict[str, Any]] = []
    for k in range(horizon):
        reached = [r for r in records if len(r.steps) > k]
        entry: dict[str, Any] = {"step": k}
        entry.update(_stats([r.steps[k] for r in reached], [k] * len(reached), confidence))
        at_budget = [r.steps[min(r.stop_step, k)] for r in records]
        budget = _stats(at_budget, [min(r.stop_step, k) for r in records], confidence)
        entry["budget_accuracy"] = budget["accuracy"]
        entry["budget_coverage"] = budget["coverage"]
        entry["budget_mean_set_size"] = budget["mean_set_size"]
        entry["budget_mean_questions"] = budget["mean_questions"]
        if calibration_n is not None and step_alpha is not None and k < len(calibration_n):
            entry["n_cal"] = int(calibration_n[k])
            entry["coverage_p_value"] = coverage_p_value(
                entry["covered"], entry["n"], int(calibration_n[k]), step_alpha
            )
        steps.append(entry)
    final: dict[str, Any] = {"step": None}
    final.update(
        _stats(
            [r.steps[r.stop_step] for r in records],
            [r.stop_step for r in records],
            confidence,
        )
    )
    final["stop_reasons"] = dict(sorted(Counter(r.stop_reason for r in records).items()))
    # The same cases stopped by set size alone (first singleton set, else the last step):
    # what the bench would show without the policy-specific stop rules.
    singleton_stop = [_first_singleton(r) for r in records]
    final_singleton: dict[str, Any] = {"step": None}
    final_singleton.update(
        _stats(
            [r.steps[k] for r, k in zip(records, singleton_stop, strict=True)],
            singleton_stop,
            confidence,
        )
    )
    return {"steps": steps, "final": final, "final_singleton": final_singleton}


def binomial_p_value(covered: int, n: int, target: float) -> float:
    """One-sided P(X <= covered) for X ~ Binomial(n, target): small = coverage below target."""
    if n < 1 or not 0 <= covered <= n:
        raise ValueError(f"need 0 <= covered <= n and n >= 1, got {covered}/{n}")
    from scipy.special import bdtr  # scipy.special, not scipy.stats: fast to import

    return float(min(1.0, bdtr(covered, n, target)))


def _label_entry(outcomes: Sequence[StepOutcome], target: float) -> dict[str, Any]:
    n = len(outcomes)
    covered = sum(o.covered for o in outcomes)
    return {
        "n": n,
        "covered": covered,
        "coverage": covered / n,
        "p_value": binomial_p_value(covered, n, target),
    }


def per_label_coverage(records: Sequence[CaseRecord], *, target: float) -> dict[str, Any]:
    """label -> {"n", "steps": [{step, n, covered, coverage, p_value}], "final": {...}}.

    Cases grouped by their true label (records without one are skipped), in sorted label
    order. ``p_value``: one-sided binomial test of coverage >= ``target`` within the label
    (a diagnostic: the calibration promises only marginal coverage, and with many labels
    and steps some small p-values arise by chance).
    """
    groups: dict[str, list[CaseRecord]] = {}
    for r in records:
        if r.label is not None:
            groups.setdefault(r.label, []).append(r)
    out: dict[str, Any] = {}
    for label in sorted(groups):
        recs = groups[label]
        horizon = max(len(r.steps) for r in recs)
        steps = []
        for k in range(horizon):
            reached = [r.steps[k] for r in recs if len(r.steps) > k]
            steps.append({"step": k, **_label_entry(reached, target)})
        final = _label_entry([r.steps[r.stop_step] for r in recs], target)
        out[label] = {"n": len(recs), "steps": steps, "final": final}
    return out


def _first_singleton(record: CaseRecord) -> int:
    return next((k for k, s in enumerate(record.steps) if s.set_size == 1), len(record.steps) - 1)


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """Mean of per-case differences a_i - b_i and its interval (None below two cases)."""

    mean: float
    low: float | None
    high: float | None
    n: int


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE
) -> PairedDifference:
    """Paired mean difference of a and b (same cases, same order) with a normal interval.

    d_i = a_i - b_i; interval mean(d) +- z * sd(d) / sqrt(n), sd with n - 1 in the
    denominator, z the two-sided normal quantile of ``confidence``. Pairing removes what the
    cases share (an easy animal is easy for every policy), so the interval is much narrower
    than that of two independent proportions. It is an asymptotic interval: with n in the
    hundreds and d in {-1, 0, 1} it is accurate; when every d_i agrees it has width 0.
    """
    x = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("need two equally long, non-empty sequences")
    mean = float(x.mean())
    if x.size < 2:
        return PairedDifference(mean, None, None, int(x.size))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half = z * float(x.std(ddof=1)) / math.sqrt(x.size)
    return PairedDifference(mean, mean - half, mean + half, int(x.size))


def budget_view(records: Sequence[CaseRecord]) -> dict[str, dict[str, list[StepOutcome]]]:
    """policy -> case id -> outcomes at budgets b = 0..T, each case at min(its stop, b).

    T is the longest record's last step; a case whose interview ended earlier keeps its stop
    outcome for every larger budget (a budget it never needed).
    """
    horizon = max(len(r.steps) for r in records)
    view: dict[str, dict[str, list[StepOutcome]]] = {}
    for r in records:
        view.setdefault(r.policy, {})[r.case_id] = [
            r.steps[min(r.stop_step, b)] for b in range(horizon)
        ]
    return view


# The policies every other is compared with, when a run has them.
BASELINES = ("ip", "random")


def paired_by_budget(
    outcomes: Mapping[str, Mapping[str, Sequence[StepOutcome]]],
    *,
    baselines: Sequence[str],
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Accuracy and coverage per budget for every policy, paired differences vs baselines.

    ``outcomes``: policy -> case id -> outcome at budgets 0, 1, ... (a shorter sequence
    repeats its last outcome). Differences pair a policy with a baseline over the case ids
    both have (``n``); a baseline missing from ``outcomes`` is skipped. Lists are aligned
    with ``budgets``.
    """
    if not outcomes:
        raise ValueError("no outcomes")
    horizon = max(len(seq) for cases in outcomes.values() for seq in cases.values())
    if horizon == 0:
        raise ValueError("every case needs budget 0")

    def at(seq: Sequence[StepOutcome], b: int) -> StepOutcome:
        return seq[min(b, len(seq) - 1)]

    def series(cases: Mapping[str, Sequence[StepOutcome]], ids: Sequence[str], key: str) -> Any:
        return np.array(
            [[getattr(at(cases[c], b), key) for c in ids] for b in range(horizon)], dtype=float
        )

    policies: dict[str, Any] = {}
    for policy, cases in outcomes.items():
        ids = sorted(cases)
        entry: dict[str, Any] = {
            "n": len(ids),
            "accuracy": series(cases, ids, "correct").mean(axis=1).tolist(),
            "coverage": series(cases, ids, "covered").mean(axis=1).tolist(),
            "vs": {},
        }
        for base in baselines:
            if base == policy or base not in outcomes:
                continue
            shared = sorted(set(cases) & set(outcomes[base]))
            if not shared:
                continue
            vs: dict[str, Any] = {"n": len(shared)}
            for key, name in (("correct", "accuracy"), ("covered", "coverage")):
                mine, theirs = series(cases, shared, key), series(outcomes[base], shared, key)
                diffs = [
                    paired_difference(mine[b], theirs[b], confidence=confidence)
                    for b in range(horizon)
                ]
                vs[name] = {
                    "diff": [d.mean for d in diffs],
                    "ci": [[d.low, d.high] for d in diffs],
                }
            entry["vs"][base] = vs
        policies[policy] = entry
    return {
        "view": "each case at min(its stop, b): the serving stop rule under a budget of b",
        "confidence": confidence,
        "budgets": list(range(horizon)),
        "baselines": [b for b in baselines if b in outcomes],
        "policies": policies,
    }


def build_report(
    *,
    records: Sequence[CaseRecord],
    alpha: float,
    model: str,
    prompt_version: str,
    confidence: float = CONFIDENCE,
    calibration_n: Mapping[str, Sequence[int]] | None = None,
    step_alpha: AlphaLike | None = None,
    extra: Mapping[str, Any] | None = None,
    baselines: Sequence[str] = (),
) -> dict[str, Any]:
    """The report.json dict; policies in first-seen order; ``extra`` keys are added on top.

    With ``baselines`` (policy names) it gains ``by_budget`` (``paired_by_budget``).
    """
    by_policy: dict[str, list[CaseRecord]] = {}
    for r in records:
        by_policy.setdefault(r.policy, []).append(r)
    report: dict[str, Any] = {
        "alpha": float(alpha),
        "model": model,
        "prompt_version": prompt_version,
        "cases": len({r.case_id for r in records}),
        "confidence": confidence,
        "target_coverage": 1.0 - float(alpha),
        "policies": {
            policy: summarise_policy(
                recs,
                confidence=confidence,
                calibration_n=None if calibration_n is None else calibration_n.get(policy),
                step_alpha=step_alpha,
            )
            for policy, recs in by_policy.items()
        },
    }
    if records and all(r.label is not None for r in records):
        for policy, recs in by_policy.items():
            report["policies"][policy]["per_label"] = per_label_coverage(
                recs, target=1.0 - float(alpha)
            )
    if baselines:
        report["by_budget"] = paired_by_budget(
            budget_view(records), baselines=baselines, confidence=confidence
        )
    for key, value in (extra or {}).items():
        if key in report:
            raise ValueError(f"extra key {key!r} would overwrite a report field")
        report[key] = value
    return report


def write_report(
    out_dir: Path,
    report: Mapping[str, Any],
    *,
    title: str,
    settings: Mapping[str, Any],
    plots: bool = True,
) -> list[Path]:
    """Write report.json, report.md and (``plots``) steps.png; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    pngs = _plot_steps(out_dir, report, title=title) if plots else []
    md_path = out_dir / "report.md"
    md_path.write_text(
        render_markdown(report, title=title, settings=settings, plots=pngs), encoding="utf-8"
    )
    return [json_path, md_path, *pngs]


def write_sweep_report(
    out_dir: Path,
    reports: Sequence[Mapping[str, Any]],
    *,
    sweep_key: str,
    title: str,
    settings: Mapping[str, Any],
    plots: bool = True,
) -> list[Path]:
    """One sub-report per sweep value under ``<sweep_key>=<value>/`` plus a top-level one.

    The top-level report.json has the single-run shape for the first report whose sweep
    value is 1 (else the first), with ``sweep`` listing every run's ``model``,
    ``prompt_version`` and ``policies``; sweep.png plots the final accuracy and mean
    questions of every policy against the sweep value.
    """
    if not reports:
        raise ValueError("no reports")
    written: list[Path] = []
    for rep in reports:
        value = rep[sweep_key]
        sub_settings = {**settings, sweep_key: value}
        written += write_report(
            out_dir / f"{sweep_key}={value:g}",
            rep,
            title=f"{title} ({sweep_key} = {value:g})",
            settings=sub_settings,
            plots=plots,
        )
    reference = next((r for r in reports if r[sweep_key] == 1), reports[0])
    top = dict(reference)
    top["sweep_key"] = sweep_key
    top["sweep"] = [
        {
            sweep_key: r[sweep_key],
            "model": r["model"],
            "prompt_version": r["prompt_version"],
            "cases": r["cases"],
            "policies": r["policies"],
        }
        for r in reports
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(top, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    pngs = [_plot_sweep(out_dir, reports, sweep_key=sweep_key, title=title)] if plots else []
    md_path = out_dir / "report.md"
    md_path.write_text(
        render_sweep_markdown(reports, sweep_key=sweep_key, title=title, settings=settings)
        + "".join(f"\n![{p.stem}]({p.name})\n" for p in pngs),
        encoding="utf-8",
    )
    return [*written, json_path, md_path, *pngs]


# Markdown.


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _ci(entry: Mapping[str, Any]) -> str:
    low, high = entry["coverage_ci"]
    return f"{_fmt(entry['coverage'])} [{_fmt(low)}, {_fmt(high)}]"


def _diff_cell(vs: Mapping[str, Any], key: str, b: int) -> str:
    diff, (low, high) = vs[key]["diff"][b], vs[key]["ci"][b]
    if low is None:
        return f"{diff:+.3f}"
    return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"


def render_by_budget(by_budget: Mapping[str, Any], *, key: str = "accuracy") -> list[str]:
    """Markdown lines: ``key`` per budget for every policy, then each paired difference."""
    policies = by_budget["policies"]
    pairs = [(p, base) for p, entry in policies.items() for base in entry["vs"]]
    conf = round(100 * by_budget["confidence"])
    header = ["b", *policies, *(f"{p} - {base} [{conf}% CI]" for p, base in pairs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for b in by_budget["budgets"]:
        cells = [str(b), *(_fmt(entry[key][b]) for entry in policies.values())]
        cells += [_diff_cell(policies[p]["vs"][base], key, b) for p, base in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# Per-label p-values below this are flagged in report.md (a diagnostic level, not a test of
# the marginal guarantee).
PER_LABEL_FLAG = 0.01


def render_per_label(policy: str, per_label: Mapping[str, Any], *, alpha: float) -> list[str]:
    """Markdown lines: each label's coverage at the last step, its worst step, at the stop."""
    lines = [
        f"## Per-label coverage: {policy} (target {1 - alpha:g})",
        "",
        "Cases grouped by true label. p: one-sided binomial test of the label's coverage >= "
        f"1 - alpha; * marks p < {PER_LABEL_FLAG} (the guarantee is marginal, not per label).",
        "",
        "| label | n | coverage (last step) | p | worst step: k, coverage | p | "
        "coverage at stop | p |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry: Mapping[str, Any]) -> str:
        flag = "*" if entry["p_value"] < PER_LABEL_FLAG else ""
        return f"{entry['p_value']:.3g}{flag}"

    for label, entry in per_label.items():
        last = entry["steps"][-1]
        worst = min(entry["steps"], key=lambda s: (s["p_value"], s["step"]))
        final = entry["final"]
        lines.append(
            f"| {label} | {entry['n']} | {_fmt(last['coverage'])} | {cell(last)} | "
            f"{worst['step']}, {_fmt(worst['coverage'])} | {cell(worst)} | "
            f"{_fmt(final['coverage'])} | {cell(final)} |"
        )
    return lines


def render_markdown(
    report: Mapping[str, Any],
    *,
    title: str,
    settings: Mapping[str, Any],
    plots: Sequence[Path] = (),
) -> str:
    """Human-readable tables; every row carries its n, every table its settings."""
    alpha = report["alpha"]
    conf = round(100 * report["confidence"])
    lines = [f"# {title}", "", "## Settings", ""]
    base = {
        "model": report["model"],
        "prompt_version": report["prompt_version"],
        "alpha": alpha,
        "test cases": report["cases"],
    }
    for key, value in {**base, **settings}.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        f"## At the stop (serving stop rule; {report['cases']} test cases, alpha {alpha})",
        "",
        f"Coverage with {conf}% Clopper-Pearson intervals; at a data-dependent stop only "
        "anytime calibration guarantees >= 1 - alpha.",
        "",
        "| policy | n | accuracy | coverage [CI] | mean set size | mean questions | stops |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy, summary in report["policies"].items():
        f = summary["final"]
        stops = ", ".join(f"{k}: {v}" for k, v in f.get("stop_reasons", {}).items())
        lines.append(
            f"| {policy} | {f['n']} | {_fmt(f['accuracy'])} | {_ci(f)} | "
            f"{_fmt(f['mean_set_size'], 2)} | {_fmt(f['mean_questions'], 2)} | {stops} |"
        )
    if all("final_singleton" in s for s in report["policies"].values()):
        lines += [
            "",
            f"## At the first singleton set, else the budget ({report['cases']} test cases)",
            "",
            "The stop rule without policy-specific rules (no gain).",
            "",
            "| policy | n | accuracy | coverage [CI] | mean set size | mean questions |",
            "|---|---|---|---|---|---|",
        ]
        for policy, summary in report["policies"].items():
            g = summary["final_singleton"]
            lines.append(
                f"| {policy} | {g['n']} | {_fmt(g['accuracy'])} | {_ci(g)} | "
                f"{_fmt(g['mean_set_size'], 2)} | {_fmt(g['mean_questions'], 2)} |"
            )
    for policy, summary in report["policies"].items():
        lines += [
            "",
            f"## Per step: {policy} (alpha {alpha}, model {report['model']})",
            "",
            "Fixed step k: every case that reached step k. Budget k: each case at "
            "min(its stop, k). p: one-sided Beta-binomial test of the conformal guarantee "
            "at step k (small p = coverage below what calibration promises).",
            "",
            "| k | n | n_cal | accuracy | coverage [CI] | p | mean set size | "
            "accuracy (budget k) | mean questions (budget k) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in summary["steps"]:
            p = s.get("coverage_p_value")
            lines.append(
                f"| {s['step']} | {s['n']} | {s.get('n_cal', '-')} | {_fmt(s['accuracy'])} | "
                f"{_ci(s)} | {'-' if p is None else f'{p:.3g}'} | "
                f"{_fmt(s['mean_set_size'], 2)} | {_fmt(s['budget_accuracy'])} | "
                f"{_fmt(s['budget_mean_questions'], 2)} |"
            )
    for policy, summary in report["policies"].items():
        if "per_label" in summary:
            lines += ["", *render_per_label(policy, summary["per_label"], alpha=alpha)]
    if "by_budget" in report:
        by_budget = report["by_budget"]
        n_cases = {e["n"] for e in by_budget["policies"].values()}
        for key in ("accuracy", "coverage"):
            lines += [
                "",
                f"## {key.capitalize()} by budget, paired ({', '.join(map(str, n_cases))} "
                "test cases)",
                "",
                "Budget b: each case at min(its stop, b). Differences pair the same cases; "
                f"{round(100 * by_budget['confidence'])}% normal intervals on the per-case "
                "differences.",
                "",
                *render_by_budget(by_budget, key=key),
            ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def render_sweep_markdown(
    reports: Sequence[Mapping[str, Any]],
    *,
    sweep_key: str,
    title: str,
    settings: Mapping[str, Any],
) -> str:
    """One table: each sweep value x policy at the stop, with n and coverage."""
    first = reports[0]
    lines = [f"# {title}", "", "## Settings", ""]
    for key, value in {"alpha": first["alpha"], "test cases": first["cases"], **settings}.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        f"## At the stop, by {sweep_key}",
        "",
        "Serving stop rule (singleton set, budget, policy rules such as no gain); the last "
        "two columns stop at a singleton set or the budget only.",
        "",
        f"| {sweep_key} | policy | n | accuracy | mean questions | coverage [CI] | "
        "mean set size | accuracy (singleton/budget) | mean questions (singleton/budget) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rep in reports:
        for policy, summary in rep["policies"].items():
            f = summary["final"]
            g = summary.get("final_singleton")
            tail = (
                "- | - |"
                if g is None
                else (f"{_fmt(g['accuracy'])} | {_fmt(g['mean_questions'], 2)} |")
            )
            lines.append(
                f"| {rep[sweep_key]:g} | {policy} | {f['n']} | {_fmt(f['accuracy'])} | "
                f"{_fmt(f['mean_questions'], 2)} | {_ci(f)} | {_fmt(f['mean_set_size'], 2)} | "
                + tail
            )
    lines += ["", "Models: " + ", ".join(f"{r['model']}" for r in reports)]
    if all("by_budget" in r for r in reports):
        lines += [
            "",
            f"## Accuracy by budget, paired, by {sweep_key}",
            "",
            "Budget b: each case at min(its stop, b); differences pair the same cases, "
            "normal intervals on the per-case differences.",
        ]
        for rep in reports:
            lines += ["", f"### {sweep_key} = {rep[sweep_key]:g}", ""]
            lines += render_by_budget(rep["by_budget"], key="accuracy")
    return "\n".join(lines) + "\n"


# Plots (matplotlib, Agg backend, imported lazily: it costs a second to import).


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_steps(out_dir: Path, report: Mapping[str, Any], *, title: str) -> list[Path]:
    """steps.png: accuracy, coverage (with CIs and 1 - alpha), set size, budget accuracy."""
    plt = _pyplot()
    alpha = float(report["alpha"])
    panels: list[tuple[str, str]] = [
        ("accuracy", "accuracy at step k"),
        ("coverage", "coverage at step k"),
        ("mean_set_size", "mean set size at step k"),
        ("budget_accuracy", "accuracy, budget of k (serving stops)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=_PLOT_SIZE, sharex=True)
    for ax, (key, ylabel) in zip(axes.flat, panels, strict=True):
        for policy, summary in report["policies"].items():
            steps = summary["steps"]
            ks = [s["step"] for s in steps]
            ax.plot(ks, [s[key] for s in steps], marker=".", label=policy)
            if key == "coverage":
                ax.fill_between(
                    ks,
                    [s["coverage_ci"][0] for s in steps],
                    [s["coverage_ci"][1] for s in steps],
                    alpha=0.2,
                )
        if key == "coverage":
            ax.axhline(1 - alpha, color="black", linestyle="--", linewidth=1, label="1 - alpha")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[1]:
        ax.set_xlabel("number of questions k", fontsize=8)
    axes[0][1].legend(fontsize=7)
    fig.suptitle(
        f"{title}\n{report['model']}, alpha={alpha:g}, n={report['cases']} test cases",
        fontsize=9,
    )
    fig.tight_layout()
    path = out_dir / "steps.png"
    fig.savefig(path, dpi=_PLOT_DPI)
    plt.close(fig)
    return [path]


def _plot_sweep(
    out_dir: Path, reports: Sequence[Mapping[str, Any]], *, sweep_key: str, title: str
) -> Path:
    """sweep.png: success and mean questions against the sweep value, one line per policy.

    Top row: each case at its serving stop (``final``); bottom row, when the summaries have
    it: at its first singleton set or last step (``final_singleton``).
    """
    plt = _pyplot()
    values = [float(r[sweep_key]) for r in reports]
    policies = list(dict.fromkeys(p for r in reports for p in r["policies"]))
    views = [("final", "serving stop rule")]
    if all("final_singleton" in s for r in reports for s in r["policies"].values()):
        views.append(("final_singleton", "stop at a singleton set or the budget"))
    fig, axes = plt.subplots(len(views), 2, figsize=(9.0, 3.2 * len(views)), squeeze=False)
    for row, (view, label) in zip(axes, views, strict=True):
        for policy in policies:
            finals = [r["policies"].get(policy, {}).get(view) for r in reports]
            xs = [v for v, f in zip(values, finals, strict=True) if f is not None]
            fs = [f for f in finals if f is not None]
            row[0].plot(xs, [f["accuracy"] for f in fs], marker="o", label=policy)
            row[1].plot(xs, [f["mean_questions"] for f in fs], marker="o", label=policy)
        row[0].set_ylabel(f"success\n({label})", fontsize=8)
        row[1].set_ylabel(f"mean questions\n({label})", fontsize=8)
    for ax in axes.flat:
        if all(v > 0 for v in values) and max(values) / min(values) > 4:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(sweep_key, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=7)
    n = reports[0]["cases"]
    fig.suptitle(f"{title}\nalpha={reports[0]['alpha']:g}, n={n} test cases per point", fontsize=9)
    fig.tight_layout()
    path = out_dir / "sweep.png"
    fig.savefig(path, dpi=_PLOT_DPI)
    plt.close(fig)
    return path
