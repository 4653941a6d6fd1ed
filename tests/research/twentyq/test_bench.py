"""The tabular 20 Questions bench end to end: coverage where promised, and policies that work.

One seeded run (temperature 1, alpha 0.1, budget 10, 600 calibration + 600 test games per
policy, 300 random-question histories per length for C-IP's selection thresholds) is shared
by the tests; it is deterministic, so a failure is a real regression.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest

from app.conformal import PerStepCalibration
from app.research.report import coverage_p_value
from app.research.twentyq import BenchConfig, BenchPolicy, RunResult, make_game, run_bench_sync
from app.research.twentyq.bench import make_split_games, records_from_traces
from app.research.twentyq.simulate import selection_thresholds, simulate_tabular
from app.worlds.tabular import TabularProvider

ALPHA = 0.1
BUDGET = 10
# Per-step level of the coverage test. 11 steps x 3 policies = 33 tests: family-wise level
# <= 0.033 by a union bound. The Beta-binomial law assumes continuous scores; identical
# games (same animal, no flipped answer) make atoms that widen the real spread a little,
# hence the small per-step level.
LEVEL = 0.001
CONFIG = BenchConfig(
    alpha=ALPHA,
    max_questions=BUDGET,
    games=600,
    calibration_games=600,
    selection_games=300,
    seed=7,
    noise=0.05,
    policies=(BenchPolicy.CIP, BenchPolicy.IP, BenchPolicy.RANDOM),
    temperatures=(1.0,),
)
GAME = make_game(20)


@pytest.fixture(scope="module")
def run() -> RunResult:
    (result,) = run_bench_sync(CONFIG)
    return result


@pytest.fixture(scope="module")
def report(run: RunResult) -> dict[str, Any]:
    return run.report(CONFIG)


def _flagged_steps(records: list[Any], calibration: PerStepCalibration) -> list[int]:
    """Steps whose coverage fails the one-sided Beta-binomial test at LEVEL."""
    flagged = []
    for k, step in enumerate(calibration.steps):
        covered = sum(r.steps[k].covered for r in records)
        if coverage_p_value(covered, len(records), step.n, calibration.step_alpha) < LEVEL:
            flagged.append(k)
    return flagged


def test_coverage_holds_at_every_step_for_every_policy(report: dict[str, Any]) -> None:
    for policy, summary in report["policies"].items():
        assert len(summary["steps"]) == BUDGET + 1
        for step in summary["steps"]:
            assert step["n"] == 600 and step["n_cal"] == 600
            assert step["coverage_p_value"] >= LEVEL, (policy, step)
        # Sets shrink as answers come in (full set at step 0).
        assert summary["steps"][0]["mean_set_size"] == 20
        assert summary["steps"][-1]["mean_set_size"] < 10


def test_the_coverage_band_fails_when_calibration_does_not_match(run: RunResult) -> None:
    """Negative controls: the same test flags a stale calibration and a wrong alpha."""
    ip = run.policies["ip"]
    split = make_split_games(CONFIG, len(GAME.labels))
    # The model became over-confident (T = 0.25) after calibrating at T = 1.
    hot = TabularProvider(GAME.model, temperature=0.25)
    traces = simulate_tabular(
        hot,
        GAME.oracle_yes,
        split["test"],
        BenchPolicy.IP,
        alpha=ALPHA,
        max_questions=BUDGET,
        selection=None,
    )
    stale = records_from_traces(BenchPolicy.IP, traces, ip.calibration, max_questions=BUDGET)
    assert len(_flagged_steps(stale, ip.calibration)) >= 5
    # Thresholds computed at alpha = 0.2 but sold as alpha = 0.1.
    cal = simulate_tabular(
        TabularProvider(GAME.model),
        GAME.oracle_yes,
        split["calibration"],
        BenchPolicy.IP,
        alpha=ALPHA,
        max_questions=BUDGET,
        selection=None,
    )
    loose = PerStepCalibration.from_scores(
        [cal.true_label_scores(k) for k in range(BUDGET + 1)], 0.2
    )
    records = records_from_traces(BenchPolicy.IP, ip.test, loose, max_questions=BUDGET)
    assert len(_flagged_steps(records, ip.calibration)) >= 5
    # ... while the matching calibration passes.
    assert _flagged_steps(list(ip.records), ip.calibration) == []


def _mcnemar_p(better: np.ndarray, worse: np.ndarray) -> float:
    """One-sided exact McNemar test (paired: same games) that ``better`` succeeds more."""
    wins = int((better & ~worse).sum())
    losses = int((~better & worse).sum())
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def test_cip_and_ip_beat_random_at_a_fixed_budget(run: RunResult) -> None:
    """Success (top label right) after BUDGET questions, no early stop, same 600 games."""
    success = {
        name: np.array([r.steps[BUDGET].correct for r in result.records])
        for name, result in run.policies.items()
    }
    for policy in ("cip", "ip"):
        assert success[policy].mean() > success["random"].mean() + 0.1, policy
        assert _mcnemar_p(success[policy], success["random"]) < 0.01, policy


def test_report_records_the_settings(report: dict[str, Any], run: RunResult) -> None:
    assert report["model"] == "tabular:awa2-20:T=1"
    assert report["prompt_version"] == GAME.model.fingerprint
    assert report["cases"] == 600 and report["temperature"] == 1.0
    assert report["settings"]["calibration_games"] == 600
    assert run.policies["cip"].selection is not None  # C-IP used calibrated selection sets
    assert run.policies["ip"].selection is None
    assert math.isclose(report["step_alpha"], ALPHA)


def test_anytime_calibration_covers_at_the_stop() -> None:
    config = BenchConfig(
        alpha=ALPHA,
        max_questions=BUDGET,
        games=400,
        calibration_games=400,
        seed=11,
        policies=(BenchPolicy.IP, BenchPolicy.RANDOM),
        anytime=True,
    )
    (result,) = run_bench_sync(config)
    report = result.report(config)
    assert report["anytime"] is True
    assert report["step_alpha"] == pytest.approx(ALPHA / (BUDGET + 1))
    for summary in report["policies"].values():
        final = summary["final"]
        # Union bound: the true label is in every set C_0..C_T at once w.p. >= 1 - alpha.
        assert final["coverage_ci"][1] >= 1 - ALPHA
        for step in summary["steps"]:
            assert step["coverage_p_value"] >= LEVEL


def test_calibrated_cip_asks_questions_and_beats_random_paired(report: dict[str, Any]) -> None:
    """With policy-free selection thresholds C-IP keeps asking (the pilot-based C-IP stopped
    after 1.5 questions on average) and wins over random on the same games."""
    final = report["policies"]["cip"]["final"]
    assert final["mean_questions"] >= 3
    assert final["stop_reasons"].get("no_gain", 0) < 0.2 * final["n"]
    vs = report["by_budget"]["policies"]["cip"]["vs"]
    for budget in (5, BUDGET):
        low, _ = vs["random"]["accuracy"]["ci"][budget]
        assert low > 0, budget  # paired 95% interval of cip - random above 0
    assert report["by_budget"]["budgets"] == list(range(BUDGET + 1))
    assert set(vs) == {"ip", "random"}


def test_selection_thresholds_do_not_depend_on_the_policies_benched() -> None:
    small: dict[str, Any] = {"alpha": ALPHA, "max_questions": 4, "games": 30}
    small |= {"calibration_games": 30, "selection_games": 120, "seed": 5}
    alone = run_bench_sync(BenchConfig(**small, policies=(BenchPolicy.CIP,)))[0]
    mixed = run_bench_sync(
        BenchConfig(**small, policies=(BenchPolicy.RANDOM, BenchPolicy.IP, BenchPolicy.CIP))
    )[0]
    assert alone.selection is not None and mixed.selection is not None
    assert alone.selection.thresholds == mixed.selection.thresholds
    assert mixed.policies["cip"].selection is mixed.selection
    direct = asyncio.run(
        selection_thresholds(
            TabularProvider(GAME.model),
            labels=GAME.labels,
            bank=GAME.questions,
            oracle_yes=GAME.oracle_yes,
            n=120,
            horizon=5,
            seed=5,
            noise=0.05,
            alpha=ALPHA,
        )
    )
    assert direct.thresholds == alone.selection.thresholds
    report = mixed.report(BenchConfig(**small, policies=(BenchPolicy.CIP,)))
    assert report["selection"]["n"] == [120] * 6 and len(report["selection"]["thresholds"]) == 6
