"""The 20 Questions benchmark: calibrate per step on some games, test on others, report.

For each temperature (step 1 once, shared by the policies) and policy:

1. ``cip`` only: selection thresholds tau_0..tau_{T+1} from random-question histories
   (``selection_games`` histories per length, labels uniform, distinct random bank
   questions, the player's answers; ``simulate.selection_thresholds``). They depend on no
   question policy, so every bench of the same game, temperature and seed shares them; C-IP
   uses tau_{k+1} inside its objective at step k, in calibration and testing alike.
2. Calibration split (``calibration_games``): games played to the budget with the policy;
   thresholds tau_k from the true-label LAC scores at each step k = 0..T (per step at
   alpha, or anytime at alpha / (T + 1)).
3. Test split (``games``): games played to the budget; the serving stop rule (singleton
   set under tau_k, budget, C-IP/IP no gain; only the budget when ``early_stop`` is off)
   picks each game's stop; one ``CaseRecord`` per game for the report.

``PAPER_PROTOCOL`` is the C-IP paper's 20 Questions protocol: the whole bank every turn, 20
questions, no early stop, 4 sampled labels per step, the entropy bound, alpha 0.1.

Splits draw disjoint seeds; the same test games serve every policy and temperature.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from app.conformal import CalibrationMetadata, PerStepCalibration
from app.engine import AnswerSource, Objective, StepwiseThresholds
from app.engine.types import PosteriorProvider, ProviderInfo
from app.errors import InvalidInputError
from app.research.report import BASELINES, CaseRecord, StepOutcome, build_report
from app.research.twentyq.data import TwentyQuestions, make_game
from app.research.twentyq.simulate import (
    BenchPolicy,
    Games,
    Scoring,
    Traces,
    make_games,
    selection_thresholds,
    simulate_engine,
    simulate_tabular,
)
from app.worlds.tabular import (
    DEFAULT_EPS,
    Distortion,
    Miscalibration,
    TabularProvider,
    build_distortion,
)

__all__ = [
    "PAPER_PROTOCOL",
    "BenchConfig",
    "PolicyResult",
    "ProviderFactory",
    "RunResult",
    "SelectionSource",
    "Simulator",
    "make_simulator",
    "make_split_games",
    "records_from_traces",
    "run_bench",
    "run_bench_sync",
    "run_temperature",
    "tabular_factory",
]

# (game, temperature) -> provider. The LLM path plugs in here.
ProviderFactory = Callable[[TwentyQuestions, float], PosteriorProvider]
# (policy, games, selection thresholds) -> traces.
Simulator = Callable[[BenchPolicy, Games, StepwiseThresholds | None], Awaitable[Traces]]
# provider -> C-IP's selection thresholds from a world's random-question histories.
SelectionSource = Callable[[PosteriorProvider], Awaitable[StepwiseThresholds]]

# The C-IP paper's 20 Questions protocol (ryanchankh/Conformal-IP, src/20q): BenchConfig
# fields it fixes.
PAPER_PROTOCOL: Final[dict[str, Any]] = {
    "alpha": 0.1,
    "max_questions": 20,
    "objective": Objective.ENTROPY_BOUND,
    "answer_source": AnswerSource.SAMPLED,
    "n_answers": 4,
    "candidates": None,
    "early_stop": False,
}
PROTOCOLS: Final = ("default", "paper")


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything that defines a bench run; recorded in the report."""

    animals: int = 20
    alpha: float = 0.1
    max_questions: int = 20
    games: int = 2000
    calibration_games: int = 1000
    selection_games: int | None = None  # None: as many as calibration_games
    seed: int = 0
    noise: float = 0.05
    anytime: bool = False
    eps: float = DEFAULT_EPS
    policies: tuple[BenchPolicy, ...] = (BenchPolicy.CIP, BenchPolicy.IP, BenchPolicy.RANDOM)
    temperatures: tuple[float, ...] = (1.0,)
    backend: str = "auto"  # auto | fast | engine
    concurrency: int = 8
    candidates: int | None = None  # C-IP/IP score a seeded random subset of the bank per turn
    objective: Objective = Objective.SET_SIZE
    answer_source: AnswerSource = AnswerSource.LLM
    n_answers: int = 4  # draws per step for answer_source "sampled"
    early_stop: bool = True  # singleton / no-gain stops; off: every game runs to the budget
    protocol: str = "default"  # recorded; "paper" must match PAPER_PROTOCOL
    # Worlds of the tabular model miscalibrated on purpose: each is run at every temperature
    # (empty: the plain table only).
    miscalibrations: tuple[Miscalibration, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(BenchPolicy(p) for p in self.policies))
        object.__setattr__(self, "objective", Objective(self.objective))
        object.__setattr__(self, "answer_source", AnswerSource(self.answer_source))
        self.scoring  # noqa: B018 -- validates the answer source and n_answers
        if self.protocol not in PROTOCOLS:
            raise InvalidInputError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "paper":
            off = [k for k, v in PAPER_PROTOCOL.items() if getattr(self, k) != v]
            if off:
                raise InvalidInputError(f"protocol 'paper' fixes {', '.join(off)}")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        if not 0 < self.alpha < 1:
            raise InvalidInputError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.games < 1 or self.calibration_games < 1 or self.max_questions < 0:
            raise InvalidInputError("need games >= 1, calibration_games >= 1, max_questions >= 0")
        if not self.policies or not self.temperatures:
            raise InvalidInputError("need at least one policy and one temperature")
        if any(not t > 0 for t in self.temperatures):
            raise InvalidInputError("temperatures must be > 0")
        if self.backend not in ("auto", "fast", "engine"):
            raise InvalidInputError(f"backend must be auto, fast or engine, got {self.backend!r}")
        if self.candidates is not None and self.candidates < 1:
            raise InvalidInputError(f"candidates must be >= 1, got {self.candidates}")
        if self.candidates is not None and self.backend == "fast":
            raise InvalidInputError(
                "the fast replica scores the whole bank; --candidates needs --backend engine"
            )
        if self.concurrency < 1:
            raise InvalidInputError(f"concurrency must be >= 1, got {self.concurrency}")

    @property
    def n_selection(self) -> int:
        """Random histories per length for C-IP's selection thresholds."""
        return self.calibration_games if self.selection_games is None else self.selection_games

    @property
    def scoring(self) -> Scoring:
        """How C-IP/IP score candidates."""
        return Scoring(self.objective, self.answer_source, self.n_answers)

    @property
    def needs_selection(self) -> bool:
        """Whether a benched policy uses selection thresholds."""
        return any(p.calibrated_selection for p in self.policies)

    def selection_settings(self) -> dict[str, Any] | None:
        """How the selection thresholds were made (None when no policy uses them)."""
        if not self.needs_selection:
            return None
        return {
            "source": "random-question histories (length marginalisation; policy-free)",
            "histories_per_length": self.n_selection,
            "lengths": f"0..{self.max_questions + 1}",
            "labels": "uniform",
            "questions": "distinct, uniform over the bank",
            "answers": f"the player: oracle answer flipped with probability {self.noise}",
            "threshold": "exact conformal rank per length (StepwiseThresholds.from_scores)",
            "used_as": "tau_{k+1} when scoring candidates at step k",
        }

    def settings(self) -> dict[str, Any]:
        """JSON-safe summary for reports."""
        return {
            "animals": self.animals,
            "alpha": self.alpha,
            "max_questions": self.max_questions,
            "test_games": self.games,
            "calibration_games": self.calibration_games,
            "selection_games": self.n_selection,
            "seed": self.seed,
            "noise": self.noise,
            "anytime": self.anytime,
            "eps": self.eps,
            "policies": [str(p) for p in self.policies],
            "temperatures": list(self.temperatures),
            "candidates": self.candidates if self.candidates is not None else "whole bank",
            **self.scoring.settings(),
            "early_stop": self.early_stop,
            "protocol": self.protocol,
            "miscalibrations": [m.label for m in self.miscalibrations] or None,
            "selection": self.selection_settings(),
        }

    def games_played(self, policy: BenchPolicy) -> int:
        """Games one policy plays at one temperature: calibration and test."""
        return self.calibration_games + self.games


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy at one temperature: its thresholds, test traces and records."""

    policy: BenchPolicy
    selection: StepwiseThresholds | None
    calibration: PerStepCalibration
    test: Traces
    records: tuple[CaseRecord, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class RunResult:
    """All policies at one temperature (and one miscalibration, when the run has them)."""

    temperature: float
    info: ProviderInfo
    policies: dict[str, PolicyResult] = field(default_factory=dict)
    seconds: float = 0.0
    selection: StepwiseThresholds | None = None
    selection_seconds: float = 0.0
    distortion: Distortion | None = None

    @property
    def miscalibration(self) -> Miscalibration | None:
        """The world's miscalibration (None: the plain table)."""
        return None if self.distortion is None else self.distortion.miscalibration

    def report(self, config: BenchConfig) -> dict[str, Any]:
        """The report.json dict (single-run shape) with temperature and settings."""
        records = [r for result in self.policies.values() for r in result.records]
        step_alpha = next(iter(self.policies.values())).calibration.step_alpha
        world: dict[str, Any] = {}
        if self.miscalibration is not None and self.distortion is not None:
            world = {
                "miscalibration": self.distortion.settings(),
                "strength": self.miscalibration.strength,
            }
        return build_report(
            records=records,
            alpha=config.alpha,
            model=self.info.model,
            prompt_version=self.info.prompt_version,
            calibration_n={
                name: [s.n for s in result.calibration.steps]
                for name, result in self.policies.items()
            },
            step_alpha=step_alpha,
            baselines=[b for b in BASELINES if b in self.policies],
            extra={
                "temperature": self.temperature,
                **world,
                "selection": self._selection_report(config),
                "step_alpha": float(step_alpha),
                "anytime": config.anytime,
                "settings": config.settings(),
                "seconds": {name: round(r.seconds, 2) for name, r in self.policies.items()},
                "seconds_per_game": {
                    name: round(r.seconds / config.games_played(r.policy), 3)
                    for name, r in self.policies.items()
                },
            },
        )

    def _selection_report(self, config: BenchConfig) -> dict[str, Any] | None:
        if self.selection is None:
            return None
        return {
            **(config.selection_settings() or {}),
            "n": [0 if s is None else len(s) for s in (self.selection.scores or ())],
            "thresholds": [t if math.isfinite(t) else None for t in self.selection.thresholds],
            "seconds": round(self.selection_seconds, 2),
        }


def tabular_factory(game: TwentyQuestions, temperature: float) -> PosteriorProvider:
    """The game's own table, tempered."""
    return TabularProvider(game.model, temperature=temperature)


def _scores_per_step(traces: Traces, horizon: int) -> list[np.ndarray[Any, np.dtype[np.float64]]]:
    return [traces.true_label_scores(k) for k in range(horizon + 1)]


def records_from_traces(
    policy: BenchPolicy,
    traces: Traces,
    calibration: PerStepCalibration,
    *,
    max_questions: int,
    early_stop: bool = True,
    labels: Sequence[str] | None = None,
) -> list[CaseRecord]:
    """Per test game: outcomes at every step under tau_k and the serving stop step.

    ``labels`` (the game's label names) gives each record its true label (per-label
    coverage in the report).

    Stop precedence as in the engine: singleton (set of one under tau_k), budget, exhausted
    (bank ran out), no gain. Without ``early_stop`` only the budget (or the bank) stops.
    """
    horizon = traces.posteriors.shape[1]
    scores = 1.0 - np.transpose(traces.posteriors, (1, 0, 2))  # (T + 1, G, K)
    sets = calibration.prediction_sets(np.nan_to_num(scores, nan=np.inf))
    sizes = sets.sum(axis=2).T  # (G, T + 1)
    g = np.arange(traces.truth.size)
    covered = sets[:, g, traces.truth].T
    top = np.argmax(np.nan_to_num(traces.posteriors, nan=-1.0), axis=2)
    correct = top == traces.truth[:, None]
    records = []
    for i in range(traces.truth.size):
        last = int(traces.n_steps[i]) - 1
        stop, reason = last, ("budget" if last >= max_questions else "exhausted")
        for k in range(min(last + 1, horizon) if early_stop else 0):
            if sizes[i, k] == 1:
                stop, reason = k, "singleton"
                break
            if k == last:
                break
            if traces.no_gain[i, k]:
                stop, reason = k, "no_gain"
                break
        records.append(
            CaseRecord(
                policy=str(policy),
                case_id=f"test-{i}",
                steps=tuple(
                    StepOutcome(bool(correct[i, k]), bool(covered[i, k]), int(sizes[i, k]))
                    for k in range(last + 1)
                ),
                stop_step=stop,
                stop_reason=reason,
                label=None if labels is None else labels[int(traces.truth[i])],
            )
        )
    return records


async def run_temperature(
    *,
    game: TwentyQuestions,
    provider: PosteriorProvider,
    temperature: float,
    config: BenchConfig,
    split_games: dict[str, Games],
    simulate: Simulator | None = None,
    selection_source: SelectionSource | None = None,
    log: Callable[[str], None] = lambda _: None,
    distortion: Distortion | None = None,
) -> RunResult:
    """Every policy of ``config`` at one temperature (and the provider's ``distortion``).

    ``simulate`` and ``selection_source`` replace the 20 Questions player (another world's
    games and its own random-question histories); by default both use ``game.oracle_yes``.
    With a distortion whose player is noisier on some attributes (``overconfident_attrs``),
    the games and the selection histories are answered by that player.
    """
    extra_noise = None if distortion is None else distortion.player_extra_noise
    split_games = {k: g.with_extra_noise(extra_noise) for k, g in split_games.items()}
    sim = simulate if simulate is not None else make_simulator(provider, game, config)
    info = provider.info
    tag = f"T={temperature:g}" + (
        ""
        if distortion is None or distortion.miscalibration is None
        else f" {distortion.miscalibration.label}"
    )
    policies: dict[str, PolicyResult] = {}
    started = time.perf_counter()
    shared: StepwiseThresholds | None = None
    if config.needs_selection and selection_source is not None:
        shared = await selection_source(provider)
        log(f"{tag} selection: {time.perf_counter() - started:.1f}s")
    elif config.needs_selection:
        shared = await selection_thresholds(
            provider,
            labels=game.labels,
            bank=game.questions,
            oracle_yes=game.oracle_yes,
            n=config.n_selection,
            horizon=config.max_questions + 1,
            seed=config.seed,
            noise=config.noise,
            alpha=config.alpha,
            concurrency=config.concurrency,
            extra_noise=extra_noise,
        )
        log(f"{tag} selection: {time.perf_counter() - started:.1f}s")
    selection_seconds = time.perf_counter() - started
    for policy in config.policies:
        t0 = time.perf_counter()
        selection = shared if policy.calibrated_selection else None
        cal_traces = await sim(policy, split_games["calibration"], selection)
        calibration = PerStepCalibration.from_scores(
            _scores_per_step(cal_traces, config.max_questions),
            config.alpha,
            anytime=config.anytime,
            metadata=CalibrationMetadata(
                model=info.model,
                prompt_version=info.prompt_version,
                policy=str(policy),
                dataset_hash=game.model.fingerprint,
                extra={"noise": str(config.noise), "seed": str(config.seed)},
            ),
        )
        test = await sim(policy, split_games["test"], selection)
        records = records_from_traces(
            policy,
            test,
            calibration,
            max_questions=config.max_questions,
            early_stop=config.early_stop,
            labels=game.labels,
        )
        seconds = time.perf_counter() - t0
        policies[str(policy)] = PolicyResult(
            policy, selection, calibration, test, tuple(records), seconds
        )
        log(f"{tag} {policy}: {seconds:.1f}s")
    return RunResult(
        temperature,
        info,
        policies,
        seconds=time.perf_counter() - started,
        selection=shared,
        selection_seconds=selection_seconds,
        distortion=distortion,
    )


def make_simulator(
    provider: PosteriorProvider, game: TwentyQuestions, config: BenchConfig
) -> Simulator:
    """The batched replica for a TabularProvider scoring the whole bank, else the engine."""
    fast = (
        isinstance(provider, TabularProvider)
        and config.backend != "engine"
        and config.candidates is None
    )
    if config.backend == "fast" and not fast:
        raise InvalidInputError("backend 'fast' needs the tabular provider")

    async def simulate(
        policy: BenchPolicy, games: Games, selection: StepwiseThresholds | None
    ) -> Traces:
        if fast:
            assert isinstance(provider, TabularProvider)
            return simulate_tabular(
                provider,
                game.oracle_yes,
                games,
                policy,
                alpha=config.alpha,
                max_questions=config.max_questions,
                selection=selection,
                scoring=config.scoring,
            )
        return await simulate_engine(
            provider,
            labels=game.labels,
            bank=game.questions,
            oracle_yes=game.oracle_yes,
            games=games,
            policy=policy,
            alpha=config.alpha,
            max_questions=config.max_questions,
            selection=selection,
            scoring=config.scoring,
            concurrency=config.concurrency,
            max_candidates=config.candidates,
        )

    return simulate


def make_split_games(config: BenchConfig, n_labels: int) -> dict[str, Games]:
    """The calibration and test games of a run (disjoint seeds)."""
    sizes = {
        "calibration": config.calibration_games,
        "test": config.games,
    }
    return {
        split: make_games(
            n=n,
            split=split,
            seed=config.seed,
            n_labels=n_labels,
            max_questions=config.max_questions,
            noise=config.noise,
        )
        for split, n in sizes.items()
    }


async def run_bench(
    config: BenchConfig,
    *,
    provider_factory: ProviderFactory = tabular_factory,
    game: TwentyQuestions | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[RunResult]:
    """One ``RunResult`` per temperature (x miscalibration), temperatures outermost.

    Miscalibrations need the tabular provider (``tabular_factory``): the distortion is
    compiled against the game's table and player with the run's seed.
    """
    game = game if game is not None else make_game(config.animals, eps=config.eps)
    if config.miscalibrations and provider_factory is not tabular_factory:
        raise InvalidInputError("--miscalibration needs the tabular provider")
    split_games = make_split_games(config, len(game.labels))
    worlds: tuple[Miscalibration | None, ...] = config.miscalibrations or (None,)
    results = []
    for temperature in config.temperatures:
        for miscalibration in worlds:
            distortion = None
            if miscalibration is None:
                provider = provider_factory(game, temperature)
            else:
                distortion = build_distortion(
                    game.model, miscalibration, player_yes=game.oracle_yes, seed=config.seed
                )
                provider = TabularProvider(
                    game.model, temperature=temperature, distortion=distortion
                )
            results.append(
                await run_temperature(
                    game=game,
                    provider=provider,
                    temperature=temperature,
                    config=config,
                    split_games=split_games,
                    log=log,
                    distortion=distortion,
                )
            )
    return results


def run_bench_sync(
    config: BenchConfig,
    *,
    provider_factory: ProviderFactory = tabular_factory,
    log: Callable[[str], None] = lambda _: None,
) -> list[RunResult]:
    """``run_bench`` in a fresh event loop (CLI, scripts)."""
    return asyncio.run(run_bench(config, provider_factory=provider_factory, log=log))
