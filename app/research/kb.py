"""The HPO knowledge-base bench: the 20 Questions bench's protocol on a rare-disease world.

One world (``KbBenchConfig.world``: a seeded differential of K diseases, its bank and the
naive-Bayes model) and the simulated patient of ``app.worlds.kb.world``. The 20 Questions machinery
does the rest (``app.research.twentyq.bench.run_temperature``): per policy a calibration split and a
test split of seeded games (disjoint seeds; the same games for every policy), per-step
thresholds from the calibration games, the serving stop rule on the test games, and the
report of ``app.research.report``. The differences from 20 Questions:

- the player is the simulated patient: game i of a split has the disease ``make_games``
  draws for it and one patient drawn from ``SeedSequence([seed, split, _PATIENT_TAG, i])``
  whose answers (yes / no / unsure per bank term) ``simulate_tabular`` reads;
- C-IP's selection thresholds come from random-question histories answered by simulated
  patients (``selection_thresholds``): per length k, ``selection_games`` histories with a
  uniform disease, a fresh patient and k distinct bank terms, scored by the provider;
- two reference points that ask no question of the policy: ``none`` (the prior, step 0 of
  every policy) and ``all_terms`` (every bank term answered; ``all_terms_reference``),
  calibrated at alpha on the calibration patients and tested on the test patients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from app.conformal import PerStepCalibration, clopper_pearson
from app.engine import Objective, StepwiseThresholds
from app.engine.types import QA, CaseContext, History, PosteriorProvider
from app.errors import InvalidInputError
from app.research.twentyq.bench import BenchConfig, RunResult, make_split_games, run_temperature
from app.research.twentyq.data import TwentyQuestions
from app.research.twentyq.simulate import (
    SPLITS,
    BenchPolicy,
    Games,
    Traces,
    simulate_tabular,
    thresholds_from_histories,
)
from app.worlds.kb.hpo import HPO_LICENSE_URL, HpoKb, load_hpo
from app.worlds.kb.world import (
    AnswerArray,
    KbWorld,
    PatientConfig,
    WorldConfig,
    answer_text,
    build_world,
    patient_answers,
)
from app.worlds.tabular import ANSWER_NO, ANSWER_YES, TabularProvider

__all__ = [
    "KbBenchConfig",
    "KbRun",
    "all_terms_reference",
    "run_kb",
    "run_kb_sync",
    "selection_thresholds",
    "split_answers",
]

# The tabular model reads neither; an LLM-backed provider would.
CASE = CaseContext(summary="A patient with a suspected rare disease; yes/no findings.")
INQUIRY = "Which disease does the patient have?"
_PATIENT_TAG: Final = (1 << 30) + 2
_HISTORY_TAG: Final = (1 << 30) + 3


@dataclass(frozen=True, slots=True)
class KbBenchConfig:
    """A KB bench run: the world, the patient, and the 20 Questions bench settings."""

    world: WorldConfig = field(default_factory=WorldConfig)
    patient: PatientConfig = field(default_factory=PatientConfig)
    alpha: float = 0.1
    max_questions: int = 15
    games: int = 1000
    calibration_games: int = 500
    selection_games: int | None = None
    seed: int = 0
    policies: tuple[BenchPolicy, ...] = (
        BenchPolicy.CIP,
        BenchPolicy.CIP_NOMINAL,
        BenchPolicy.IP,
        BenchPolicy.RANDOM,
    )
    objective: Objective = Objective.SET_SIZE
    early_stop: bool = True
    anytime: bool = False

    @property
    def bench(self) -> BenchConfig:
        """The 20 Questions bench settings that play it (the player's noise is the patient's)."""
        return BenchConfig(
            animals=self.world.candidates,
            alpha=self.alpha,
            max_questions=self.max_questions,
            games=self.games,
            calibration_games=self.calibration_games,
            selection_games=self.selection_games,
            seed=self.seed,
            noise=0.0,
            anytime=self.anytime,
            policies=self.policies,
            temperatures=(1.0,),
            backend="fast",
            objective=self.objective,
            early_stop=self.early_stop,
        )

    def settings(self, world: KbWorld, kb: HpoKb) -> dict[str, Any]:
        """JSON-safe summary for reports: the bench's, the world's, the patient's, the data's."""
        bench = self.bench.settings()
        for key in ("animals", "noise", "eps", "temperatures", "protocol"):
            bench.pop(key, None)
        selection = bench.get("selection")
        if isinstance(selection, dict):
            selection["answers"] = "simulated patients (as the games' players)"
            selection["labels"] = "uniform over the candidates"
        return {
            "kb": "hpo",
            **bench,
            **self.world.settings(),
            "patient": self.patient.settings(),
            "differential": world.summary(kb),
            "data": {
                "source": f"hpo3 {kb.package_version} wheel (no download at run time)",
                "hpo release": kb.version,
                "load seconds": round(kb.load_seconds, 2),
                "attribution": kb.attribution,
                "licence": HPO_LICENSE_URL,
            },
        }


@dataclass(frozen=True, slots=True)
class KbRun:
    """A finished KB bench run: the world, the 20 Questions result and the report."""

    config: KbBenchConfig
    world: KbWorld
    result: RunResult
    all_terms: dict[str, Any]
    report: dict[str, Any]


def _patient_seeds(seed: int, split: str, n: int) -> list[np.random.SeedSequence]:
    return [np.random.SeedSequence([seed, SPLITS[split], _PATIENT_TAG, i]) for i in range(n)]


def split_answers(world: KbWorld, games: Games, patient: PatientConfig, seed: int) -> AnswerArray:
    """(G, A) answers of a split's patients: game i's disease, game i's own patient draw."""
    return patient_answers(
        world, games.truth, _patient_seeds(seed, games.split, len(games)), patient
    )


async def selection_thresholds(
    provider: PosteriorProvider,
    *,
    world: KbWorld,
    patient: PatientConfig,
    n: int,
    horizon: int,
    seed: int,
    alpha: float,
) -> StepwiseThresholds:
    """tau_0..tau_horizon from random-question histories answered by simulated patients.

    Per length k (seeded by (seed, k)): n diseases uniform, a fresh patient each, k distinct
    bank terms uniform, that patient's answers; thresholds as 20 Questions makes them
    (``app.research.twentyq.simulate.thresholds_from_histories``).
    """
    if n < 1:
        raise InvalidInputError(f"selection needs n >= 1 histories, got {n}")
    bank, labels = world.model.questions, world.labels

    def draw(k: int) -> tuple[Any, list[History]]:
        root = np.random.SeedSequence([seed, SPLITS["selection"], _HISTORY_TAG, k])
        rng = np.random.default_rng(root)
        truth = rng.integers(len(labels), size=n)
        answers = patient_answers(world, truth, root.spawn(n), patient)
        questions = np.argsort(rng.random((n, len(bank))), axis=1)[:, : min(k, len(bank))]
        histories: list[History] = [
            tuple(QA(bank[int(a)], answer_text(int(answers[h, a]))) for a in questions[h])
            for h in range(n)
        ]
        return truth, histories

    return await thresholds_from_histories(
        provider,
        draw,
        labels=labels,
        horizon=horizon,
        alpha=alpha,
        case=CASE,
        inquiry=INQUIRY,
    )


def _all_terms_posteriors(provider: TabularProvider, answers: AnswerArray) -> Any:
    yes = (answers == ANSWER_YES).astype(np.float64)
    no = (answers == ANSWER_NO).astype(np.float64)
    post = provider.posterior_from_logits(provider.logits(yes, no))
    return post / post.sum(axis=1, keepdims=True)


def all_terms_reference(
    provider: TabularProvider,
    *,
    calibration: tuple[Games, AnswerArray],
    test: tuple[Games, AnswerArray],
    alpha: float,
) -> dict[str, Any]:
    """Every bank term answered: top-label accuracy, and a set calibrated at alpha on the
    calibration patients, on the test patients (Clopper-Pearson 95% intervals)."""
    cal_games, cal_answers = calibration
    test_games, test_answers = test
    cal_post = _all_terms_posteriors(provider, cal_answers)
    test_post = _all_terms_posteriors(provider, test_answers)
    cal_scores = 1.0 - cal_post[np.arange(len(cal_games)), cal_games.truth]
    step = PerStepCalibration.from_scores([cal_scores], alpha)
    sets = step.prediction_sets((1.0 - test_post)[None])[0]
    n = len(test_games)
    correct = int((test_post.argmax(axis=1) == test_games.truth).sum())
    covered = int(sets[np.arange(n), test_games.truth].sum())
    return {
        "questions": int(test_answers.shape[1]),
        "n": n,
        "n_cal": len(cal_games),
        "accuracy": correct / n,
        "accuracy_ci": list(clopper_pearson(correct, n)),
        "coverage": covered / n,
        "coverage_ci": list(clopper_pearson(covered, n)),
        "mean_set_size": float(sets.sum(axis=1).mean()),
    }


def _as_game(world: KbWorld) -> TwentyQuestions:
    """The world in the shape ``run_temperature`` takes (oracle: the propagated annotations,
    used by nothing here since the simulator and the selection are the world's own)."""
    return TwentyQuestions(
        name=world.model.name,
        model=world.model,
        oracle_yes=world.annotated,
        oracle_source=("hpo propagated annotations",) * len(world.labels),
    )


async def run_kb(
    config: KbBenchConfig,
    *,
    kb: HpoKb | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> KbRun:
    """Build the world, play every policy on the same seeded patients, report."""
    kb = kb if kb is not None else load_hpo()
    world = build_world(kb, config.world)
    bench = config.bench
    provider = TabularProvider(world.model)
    split_games = make_split_games(bench, len(world.labels))
    answers = {
        split: split_answers(world, games, config.patient, config.seed)
        for split, games in split_games.items()
    }

    async def simulate(
        policy: BenchPolicy, games: Games, selection: StepwiseThresholds | None
    ) -> Traces:
        return simulate_tabular(
            provider,
            world.annotated,
            games,
            policy,
            alpha=config.alpha,
            max_questions=config.max_questions,
            selection=selection,
            scoring=bench.scoring,
            answers=answers[games.split],
        )

    async def selection(p: PosteriorProvider) -> StepwiseThresholds:
        return await selection_thresholds(
            p,
            world=world,
            patient=config.patient,
            n=bench.n_selection,
            horizon=config.max_questions + 1,
            seed=config.seed,
            alpha=config.alpha,
        )

    started = time.perf_counter()
    result = await run_temperature(
        game=_as_game(world),
        provider=provider,
        temperature=1.0,
        config=bench,
        split_games=split_games,
        simulate=simulate,
        selection_source=selection,
        log=log,
    )
    all_terms = all_terms_reference(
        provider,
        calibration=(split_games["calibration"], answers["calibration"]),
        test=(split_games["test"], answers["test"]),
        alpha=config.alpha,
    )
    report = result.report(bench)
    report["temperature"] = None
    report["settings"] = config.settings(world, kb)
    report["all_terms"] = all_terms
    report["none"] = {"questions": 0, "note": "the prior: step 0 of every policy"}
    report["attribution"] = kb.attribution
    report["seconds"]["total"] = round(time.perf_counter() - started, 2)
    return KbRun(config, world, result, all_terms, report)


def run_kb_sync(
    config: KbBenchConfig, *, kb: HpoKb | None = None, log: Callable[[str], None] = lambda _: None
) -> KbRun:
    """``run_kb`` in a fresh event loop (CLI, tests)."""
    return asyncio.run(run_kb(config, kb=kb, log=log))
