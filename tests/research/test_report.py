"""The benchmark report writer: report.json shape, numbers, markdown and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.research.report import (
    CaseRecord,
    StepOutcome,
    budget_view,
    build_report,
    coverage_p_value,
    paired_by_budget,
    paired_difference,
    write_report,
    write_sweep_report,
)

STEP_KEYS = {
    "step",
    "n",
    "accuracy",
    "coverage",
    "coverage_ci",
    "mean_set_size",
    "mean_questions",
}


def outcome(correct: bool, covered: bool, size: int) -> StepOutcome:
    return StepOutcome(correct=correct, covered=covered, set_size=size)


def records() -> list[CaseRecord]:
    """Two policies x 3 cases; case 2 of "ip" ended its interview one step early."""
    return [
        CaseRecord(
            "cip",
            "c0",
            (outcome(False, True, 4), outcome(True, True, 1), outcome(True, True, 1)),
            1,
            "singleton",
        ),
        CaseRecord(
            "cip",
            "c1",
            (outcome(False, True, 4), outcome(False, False, 2), outcome(True, True, 2)),
            2,
            "budget",
        ),
        CaseRecord(
            "cip",
            "c2",
            (outcome(False, True, 4), outcome(False, True, 3), outcome(False, False, 1)),
            2,
            "singleton",
        ),
        CaseRecord("ip", "c0", (outcome(False, True, 4), outcome(True, True, 1)), 1, "singleton"),
        CaseRecord("ip", "c1", (outcome(False, True, 4), outcome(True, True, 2)), 1, "exhausted"),
        CaseRecord(
            "ip",
            "c2",
            (outcome(True, True, 4), outcome(True, True, 2), outcome(True, True, 1)),
            2,
            "singleton",
        ),
    ]


def make_report(baselines: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return build_report(
        records=records(),
        alpha=0.1,
        model="tabular:test:T=1",
        prompt_version="abc",
        calibration_n={"cip": [50, 50, 50], "ip": [50, 50, 40]},
        step_alpha=0.1,
        extra=extra or None,
        baselines=baselines,
    )


def test_report_json_has_the_agreed_shape() -> None:
    report = make_report(temperature=1.0)
    assert report["alpha"] == 0.1 and report["model"] == "tabular:test:T=1"
    assert report["prompt_version"] == "abc" and report["cases"] == 3
    assert report["temperature"] == 1.0
    assert list(report["policies"]) == ["cip", "ip"]
    for summary in report["policies"].values():
        assert set(summary) >= {"steps", "final"}
        for entry in [*summary["steps"], summary["final"]]:
            assert set(entry) >= STEP_KEYS
            assert isinstance(entry["n"], int)
            for key in ("accuracy", "coverage", "mean_set_size", "mean_questions"):
                assert isinstance(entry[key], float)
            low, high = entry["coverage_ci"]
            assert 0.0 <= low <= entry["coverage"] <= high <= 1.0
        assert [s["step"] for s in summary["steps"]] == [0, 1, 2]
        assert summary["final"]["step"] is None
    json.dumps(report, allow_nan=False)  # strict JSON


def test_report_numbers_are_the_hand_counted_ones() -> None:
    cip = make_report()["policies"]["cip"]
    step1 = cip["steps"][1]
    assert step1["n"] == 3 and step1["accuracy"] == pytest.approx(1 / 3)
    assert step1["coverage"] == pytest.approx(2 / 3) and step1["mean_set_size"] == 2.0
    assert step1["mean_questions"] == 1.0
    # Budget 1: every case at min(stop, 1) = 1.
    assert step1["budget_accuracy"] == pytest.approx(1 / 3)
    step2 = cip["steps"][2]
    # Budget 2: c0 stopped at 1 (correct), c1 and c2 at 2 (correct, wrong).
    assert step2["budget_accuracy"] == pytest.approx(2 / 3)
    assert step2["budget_mean_questions"] == pytest.approx(5 / 3)
    final = cip["final"]
    assert final["n"] == 3 and final["accuracy"] == pytest.approx(2 / 3)
    assert final["coverage"] == pytest.approx(2 / 3)
    assert final["mean_set_size"] == pytest.approx(4 / 3)
    assert final["mean_questions"] == pytest.approx(5 / 3)
    assert final["stop_reasons"] == {"budget": 1, "singleton": 2}
    # First singleton: c0 at 1, c1 never (last step 2), c2 at 2.
    assert cip["final_singleton"]["mean_questions"] == pytest.approx(5 / 3)
    ip = make_report()["policies"]["ip"]
    # Step 2 was reached by one ip case only.
    assert ip["steps"][2]["n"] == 1 and ip["steps"][2]["n_cal"] == 40
    assert ip["steps"][1]["coverage_p_value"] == coverage_p_value(3, 3, 50, 0.1)


def test_coverage_p_value_is_the_beta_binomial_lower_tail() -> None:
    # n_cal = 9 at alpha 0.1: rank 9 of 9, coverage ~ Beta(9, 1): P(all of 1 covered) = 0.9.
    assert coverage_p_value(0, 1, 9, 0.1) == pytest.approx(0.1)
    assert coverage_p_value(1, 1, 9, 0.1) == pytest.approx(1.0)
    assert coverage_p_value(0, 5, 8, 0.1) == 1.0  # rank > n: infinite threshold, full set
    assert coverage_p_value(75, 100, 1000, 0.1) < 0.001
    assert coverage_p_value(90, 100, 1000, 0.1) > 0.3


def test_extra_fields_cannot_overwrite_the_shape() -> None:
    with pytest.raises(ValueError, match="overwrite"):
        make_report(alpha=0.2)
    with pytest.raises(ValueError):
        CaseRecord("cip", "x", (outcome(True, True, 1),), 1)


def test_write_report_writes_json_and_markdown(tmp_path: Path) -> None:
    report = make_report()
    paths = write_report(tmp_path, report, title="Unit", settings={"games": 3}, plots=False)
    assert {p.name for p in paths} == {"report.json", "report.md"}
    assert json.loads((tmp_path / "report.json").read_text()) == report
    md = (tmp_path / "report.md").read_text()
    assert "| cip | 3 | 0.667 |" in md and "games: 3" in md and "n_cal" in md


def test_write_sweep_report_nests_runs_and_plots_the_sweep(tmp_path: Path) -> None:
    runs = [make_report(temperature=t) for t in (0.5, 1.0)]
    paths = write_sweep_report(tmp_path, runs, sweep_key="temperature", title="Sweep", settings={})
    pngs = [p for p in paths if p.suffix == ".png"]
    assert {p.name for p in pngs} == {"steps.png", "sweep.png"} and len(pngs) == 3
    for p in pngs:  # steps.png per temperature: accuracy, coverage, set size vs k
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![steps](steps.png)" in (tmp_path / "temperature=1" / "report.md").read_text()
    top = json.loads((tmp_path / "report.json").read_text())
    assert top["temperature"] == 1.0 and [s["temperature"] for s in top["sweep"]] == [0.5, 1]
    assert set(top) >= {"alpha", "model", "prompt_version", "cases", "policies", "sweep"}
    assert (tmp_path / "temperature=0.5" / "report.json").exists()
    assert "| 0.5 | ip | 3 |" in (tmp_path / "report.md").read_text()


Z95 = 1.959963984540054


def test_paired_difference_is_the_normal_interval_on_per_case_differences() -> None:
    # d = [1, 0, 0, 1]: mean 1/2, sd sqrt(1/3) (n - 1 denominator), se sqrt(1/3) / 2.
    d = paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    half = Z95 * (1 / 3) ** 0.5 / 2
    assert d.n == 4 and d.mean == pytest.approx(0.5)
    assert (d.low, d.high) == pytest.approx((0.5 - half, 0.5 + half))
    # Pairing: a constant shift has no spread at all, so the interval has width 0 ...
    same = paired_difference([1, 0, 1, 0], [0, -1, 0, -1])
    assert (same.mean, same.low, same.high) == (1.0, 1.0, 1.0)
    # ... and one case gives no interval.
    assert paired_difference([1], [0]).low is None
    with pytest.raises(ValueError):
        paired_difference([], [])


def test_by_budget_pairs_the_same_cases_at_every_budget() -> None:
    report = make_report(baselines=("ip", "random"))
    by_budget = report["by_budget"]
    assert by_budget["budgets"] == [0, 1, 2] and by_budget["baselines"] == ["ip"]
    cip, ip = by_budget["policies"]["cip"], by_budget["policies"]["ip"]
    # Budget b: each case at min(stop, b); ip's c0 and c1 stopped at 1 and keep step 1.
    assert cip["accuracy"] == pytest.approx([0, 1 / 3, 2 / 3])
    assert ip["accuracy"] == pytest.approx([1 / 3, 1, 1])
    assert cip["coverage"] == pytest.approx([1, 2 / 3, 2 / 3])
    assert ip["vs"] == {} and cip["n"] == 3
    vs = cip["vs"]["ip"]
    assert vs["n"] == 3
    # Budget 1: d = [0, -1, -1], sd sqrt(1/3), se 1/3.
    assert vs["accuracy"]["diff"] == pytest.approx([-1 / 3, -2 / 3, -1 / 3])
    low, high = vs["accuracy"]["ci"][1]
    assert (low, high) == pytest.approx((-2 / 3 - Z95 / 3, -2 / 3 + Z95 / 3))
    assert vs["coverage"]["diff"] == pytest.approx([0, -1 / 3, -1 / 3])
    assert vs["coverage"]["ci"][0] == [0.0, 0.0]  # every case agrees: width 0
    json.dumps(report, allow_nan=False)
    assert "by_budget" not in make_report()  # only on request (the MediQ bench's shape)


def test_paired_by_budget_takes_plain_outcomes_and_pairs_by_case_id() -> None:
    hit, miss = outcome(True, True, 1), outcome(False, False, 3)
    outcomes = {
        "a": {"x": [miss, hit], "y": [miss, hit], "z": [hit]},
        "b": {"y": [miss, miss], "x": [miss, miss], "w": [hit, hit]},
    }
    table = paired_by_budget(outcomes, baselines=["b"])
    assert table["policies"]["a"]["accuracy"] == pytest.approx([1 / 3, 1])
    vs = table["policies"]["a"]["vs"]["b"]
    assert vs["n"] == 2 and vs["accuracy"]["diff"] == [0.0, 1.0]  # x and y only
    view = budget_view(records())
    assert [o.correct for o in view["ip"]["c0"]] == [False, True, True]


def test_markdown_shows_the_paired_budget_tables(tmp_path: Path) -> None:
    report = make_report(baselines=("ip",))
    write_report(tmp_path, report, title="Unit", settings={}, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "## Accuracy by budget, paired" in md and "## Coverage by budget, paired" in md
    assert "| b | cip | ip | cip - ip [95% CI] |" in md
    assert (
        f"| 1 | 0.333 | 1.000 | -0.667 [{-2 / 3 - Z95 / 3:+.3f}, {-2 / 3 + Z95 / 3:+.3f}] |" in md
    )


def test_per_label_coverage_groups_cases_by_true_label() -> None:
    """Label "a" is covered 3 times of 4 at step 1, "b" never: binomial lower tails."""
    from scipy.stats import binom

    hit, miss = outcome(True, True, 1), outcome(False, False, 2)
    cases = [("a", (hit, hit)), ("a", (hit, hit)), ("a", (hit, hit)), ("a", (hit, miss))]
    cases += [("b", (hit, miss)), ("b", (miss, miss))]
    recs = [
        CaseRecord(policy="ip", case_id=f"c{i}", steps=steps, stop_step=0, label=label)
        for i, (label, steps) in enumerate(cases)
    ]
    report = build_report(records=recs, alpha=0.1, model="m", prompt_version="v")
    per_label = report["policies"]["ip"]["per_label"]
    assert list(per_label) == ["a", "b"] and per_label["a"]["n"] == 4
    a1, b0 = per_label["a"]["steps"][1], per_label["b"]["steps"][0]
    assert (a1["covered"], a1["coverage"]) == (3, 0.75)
    assert a1["p_value"] == pytest.approx(binom.cdf(3, 4, 0.9))
    assert b0["p_value"] == pytest.approx(binom.cdf(1, 2, 0.9))
    assert per_label["b"]["final"]["covered"] == 1  # at the stop (step 0)
    # Records without labels (the other benches) get no per-label section.
    assert (
        "per_label"
        not in build_report(records=records(), alpha=0.1, model="m", prompt_version="v")[
            "policies"
        ]["ip"]
    )
