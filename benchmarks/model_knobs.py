"""Which miscalibration knobs resemble a real local LLM (issue 17, item 2).

Every posterior comes through the project's gateway (``LLMGateway.posterior_prompts`` and
``score_prompts``: the product's own prompt, letters read with ``logprob_token_ids``), one
option order per prompt, so the raw letter bias is visible; the estimators are in
``benchmarks.knob_stats``. On the shipped 20 Questions game (the paper's 20 animals, its
yes/no answers) and the shipped iMedQA dev cases (4 options, atomic facts):

1. **position bias** (``label_bias``): 20Q histories and MediQ cases, each in all K cyclic
   option orders; the mean centred logit per letter position, its sd across positions, the
   share of mass on the first option;
2. **polarity**: a 20Q history, then one question answered "Yes." or "No."; how far each
   moves the labels consistent with it (contrast of the change in centred log posterior),
   against the tabular model's log P(yes | label), log P(no | label) contrasts; s^2 is the
   ratio of the two relative weights;
3. **length**: 20Q games (a true animal, its paper answers) at n = 0..``--max-answers``
   answers; per n, the LLM's max posterior, entropy and P(true) beside the tabular model's on
   the same histories (uniform prior), and the evidence weight c_n: the least-squares slope of
   the LLM's centred logit change since n = 0 on the table's log-likelihood (1 = weighs the
   answers as the table does); c_n = beta * (1 + s * n / 10) gives the length s;
4. **paraphrase** (``logit_noise``): the same answer in ``--wordings`` wordings (20Q yes/no
   answers; MediQ facts in simple templates); the sd of per-label centred logits across
   wordings; and its floor: the first wording's prompt scored again in another batch;
5. **temperature**: the T minimising the true label's NLL (20Q length histories; MediQ
   single orders and the all-orders average);
6. **direct** (a diagnostic, no knob): "Is the animal a zebra?" answered "Yes." or "No.";
   how far the named animal's centred logit moves, and how often it is then on top: does
   the model read the interview at all.

    .venv/bin/python -m benchmarks.model_knobs --base-url http://127.0.0.1:8001 \
        --model smollm2-135m --prompts 400 --json var/knobs-smollm2.json

``--prompts`` is the budget the sections are sized from (the report counts what was scored);
``--sections`` runs a subset.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from app.datasets.mediq import MediQCase, load_mediq
from app.engine.banks import load_query_bank
from app.engine.types import QA, CaseContext, History
from app.llm.cache import LRUPosteriorCache
from app.llm.client import llm_http_client
from app.llm.gateway import LLMGateway
from app.research.twentyq.data import TwentyQuestions, make_game
from app.research.twentyq.simulate import CASE as TWENTYQ_CASE
from app.research.twentyq.simulate import INQUIRY as TWENTYQ_INQUIRY
from app.settings import Settings
from app.worlds.tabular import NO, YES
from benchmarks import knob_stats as ks

DATASET = Path("app/data/mediq/imedqa_dev.jsonl")
FloatArray = npt.NDArray[np.float64]

YES_WORDINGS = ("Yes.", "Yes, it does.", "Yeah, I think so.", "Yes, definitely.", "That's right.")
NO_WORDINGS = (
    "No.",
    "No, it doesn't.",
    "Nope, I don't think so.",
    "Definitely not.",
    "Not at all.",
)
FACT_TEMPLATES = (
    "{fact}",
    "Yes. {fact}",
    "I can tell you that {lower}",
    "Well, {lower}",
    "{fact} That is all I know.",
)
MAX_WORDINGS = len(FACT_TEMPLATES)
DIRECT_MAX = 20  # the 20 animals
SECTIONS = ("position", "polarity", "length", "paraphrase", "direct")


@dataclass(frozen=True, slots=True)
class Query:
    """One prompt: options shown in ``labels[shift:] + labels[:shift]`` order."""

    case: CaseContext
    inquiry: str
    labels: tuple[str, ...]
    history: History
    shift: int = 0

    @property
    def shown(self) -> tuple[str, ...]:
        return self.labels[self.shift :] + self.labels[: self.shift]


@dataclass(frozen=True, slots=True)
class Plan:
    """How many items each section scores, from the prompt budget."""

    position_20q: int
    position_mediq: int
    polarity: int
    length_games: int
    paraphrase_20q: int
    paraphrase_mediq: int
    direct: int
    max_answers: int
    wordings: int

    @classmethod
    def from_budget(cls, prompts: int, *, max_answers: int, wordings: int) -> Plan:
        def share(fraction: float, per_item: int, least: int) -> int:
            return max(least, round(prompts * fraction / per_item))

        return cls(
            position_20q=share(0.20, 20, 1),
            position_mediq=share(0.15, 4, 2),
            polarity=share(0.20, 3, 2),
            length_games=share(0.20, max_answers + 1, 2),
            paraphrase_20q=share(0.15, 2 * wordings, 1),
            paraphrase_mediq=share(0.10, wordings, 2),
            direct=min(DIRECT_MAX, share(0.05, 3, 2)),
            max_answers=max_answers,
            wordings=wordings,
        )


class Scorer:
    """Renders queries through the gateway and returns probabilities in label order."""

    def __init__(self, gateway: LLMGateway) -> None:
        self._gateway = gateway
        self.scored = 0

    async def __call__(self, queries: Sequence[Query]) -> list[FloatArray]:
        setup = await self._gateway._ensure_setup()
        texts: list[str] = []
        for q in queries:
            table, _ = self._gateway.posterior_prompts(
                setup, case=q.case, histories=[q.history], inquiry=q.inquiry, labels=q.shown
            )
            texts.append(table[0][0])
        by_k: dict[int, list[str]] = {}
        for q, text in zip(queries, texts, strict=True):
            by_k.setdefault(len(q.labels), []).append(text)
        scored: dict[str, tuple[float, ...]] = {}
        for k, group in by_k.items():
            scored.update(await self._gateway.score_prompts(group, k))
        self.scored += len(scored)
        # Position pos shows label (pos + shift) % K: rolling by shift puts labels in order.
        return [
            np.roll(np.asarray(scored[t]), q.shift) for q, t in zip(queries, texts, strict=True)
        ]

    async def positions(self, queries: Sequence[Query]) -> list[FloatArray]:
        """As ``__call__`` but per letter position (the order shown)."""
        return [np.roll(p, -q.shift) for q, p in zip(queries, await self(queries), strict=True)]


# --- the 20Q and MediQ items ------------------------------------------------------------------


def answer(game: TwentyQuestions, animal: int, attribute: int) -> str:
    return YES if game.oracle_yes[animal, attribute] else NO


def twentyq_history(
    game: TwentyQuestions, rng: np.random.Generator, animal: int, n: int
) -> tuple[History, list[int]]:
    """n distinct random questions with the paper's answers for ``animal``; and their ids."""
    picks = [int(a) for a in rng.choice(len(game.questions), size=n, replace=False)]
    return tuple(QA(game.questions[a], answer(game, animal, a)) for a in picks), picks


def twentyq_query(game: TwentyQuestions, history: History, shift: int) -> Query:
    return Query(TWENTYQ_CASE, TWENTYQ_INQUIRY, game.labels, history, shift)


def mediq_cases(count: int, rng: np.random.Generator, path: Path) -> list[MediQCase]:
    cases = [c for c in load_mediq(path, strict=False).cases if c.facts and len(c.labels) == 4]
    return [
        cases[int(i)] for i in rng.choice(len(cases), size=min(count, len(cases)), replace=False)
    ]


def mediq_query(case: MediQCase, history: History, shift: int) -> Query:
    return Query(case.case_context, case.inquiry, case.labels, history, shift)


def phrase_fact(fact: str, template: str) -> str:
    lower = fact[:1].lower() + fact[1:] if fact[1:2].islower() else fact
    return template.format(fact=fact, lower=lower)


# --- sections -----------------------------------------------------------------------------------


async def position_section(
    score: Scorer, game: TwentyQuestions, cases: Sequence[MediQCase], plan: Plan, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 1])
    k20 = len(game.labels)
    histories = [
        twentyq_history(game, rng, int(rng.integers(k20)), int(rng.integers(0, 5)))[0]
        for _ in range(plan.position_20q)
    ]
    q20 = [twentyq_query(game, h, s) for h in histories for s in range(k20)]
    qmq = [mediq_query(c, (), s) for c in cases for s in range(len(c.labels))]
    p20 = np.asarray(await score.positions(q20)).reshape(len(histories), k20, k20)
    pmq_labels = np.asarray(await score(qmq)).reshape(len(cases), 4, 4)
    pmq = np.asarray([[np.roll(row, -s) for s, row in enumerate(item)] for item in pmq_labels])
    true = np.asarray([c.answer_index for c in cases])
    single = ks.fit_temperature(pmq_labels.reshape(-1, 4), np.repeat(true, 4))
    averaged = ks.fit_temperature(pmq_labels.mean(axis=1), true)
    return {
        "twentyq": dataclasses.asdict(ks.position_bias(p20)),
        "mediq": dataclasses.asdict(ks.position_bias(pmq)),
        "mediq_temperature_single_order": dataclasses.asdict(single),
        "mediq_temperature_all_orders_averaged": dataclasses.asdict(averaged),
        "prompts": len(q20) + len(qmq),
    }


async def polarity_section(
    score: Scorer, game: TwentyQuestions, plan: Plan, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 2])
    k = len(game.labels)
    items: list[tuple[int, list[Query]]] = []
    while len(items) < plan.polarity:
        history, asked = twentyq_history(game, rng, int(rng.integers(k)), int(rng.integers(0, 3)))
        a = int(rng.choice([i for i in range(len(game.questions)) if i not in asked]))
        yes = game.oracle_yes[:, a]
        if yes.all() or not yes.any():
            continue  # no label is told apart by this question
        q = game.questions[a]
        shift = int(rng.integers(k))
        items.append(
            (
                a,
                [
                    twentyq_query(game, history, shift),
                    twentyq_query(game, (*history, QA(q, YES)), shift),
                    twentyq_query(game, (*history, QA(q, NO)), shift),
                ],
            )
        )
    probs = await score([q for _, qs in items for q in qs])
    measured: list[ks.PolarityItem] = []
    for i, (a, _) in enumerate(items):
        before, after_yes, after_no = probs[3 * i : 3 * i + 3]
        measured.append(
            ks.polarity_item(
                before=before,
                after_yes=after_yes,
                after_no=after_no,
                yes_consistent=game.oracle_yes[:, a],
                log_p_yes=game.model.log_yes[a],
                log_p_no=game.model.log_no[a],
            )
        )
    fit = ks.fit_polarity(measured, seed=seed)
    return {
        **dataclasses.asdict(fit),
        "mean_moved_yes": float(np.mean([m.moved_yes for m in measured])),
        "mean_moved_no": float(np.mean([m.moved_no for m in measured])),
        "mean_table_yes": float(np.mean([m.table_yes for m in measured])),
        "mean_table_no": float(np.mean([m.table_no for m in measured])),
        "prompts": 3 * len(items),
    }


def _tabular_posteriors(game: TwentyQuestions, histories: Sequence[History]) -> FloatArray:
    yes, no = game.model.evidence(histories)
    return ks.softmax(game.model.log_joint(yes, no))


async def length_section(
    score: Scorer, game: TwentyQuestions, plan: Plan, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 3])
    k = len(game.labels)
    games = []
    for _ in range(plan.length_games):
        animal = int(rng.integers(k))
        history, _ = twentyq_history(game, rng, animal, plan.max_answers)
        games.append((animal, history, int(rng.integers(k))))
    queries = [
        twentyq_query(game, history[:n], shift)
        for _, history, shift in games
        for n in range(plan.max_answers + 1)
    ]
    llm = np.asarray(await score(queries)).reshape(len(games), plan.max_answers + 1, k)
    true = np.asarray([animal for animal, _, _ in games])
    rows = np.arange(len(games))
    start = ks.centered_logits(llm[:, 0])
    per_n: list[dict[str, float | int | None]] = []
    terms: list[tuple[FloatArray, FloatArray]] = []
    for n in range(plan.max_answers + 1):
        yes, no = game.model.evidence([history[:n] for _, history, _ in games])
        loglik = game.model.log_joint(yes, no) - game.model.log_prior
        table = ks.softmax(loglik)
        model = llm[:, n]
        weight: float | None = None
        if n >= 1:
            terms.append(ks.evidence_terms(ks.centered_logits(model) - start, loglik))
            weight = float(terms[-1][0].sum() / terms[-1][1].sum())
        per_n.append(
            {
                "n": n,
                "llm_max_p": float(model.max(axis=1).mean()),
                "llm_entropy": float(ks.entropy(model).mean()),
                "llm_p_true": float(model[rows, true].mean()),
                "llm_accuracy": float((model.argmax(axis=1) == true).mean()),
                "table_max_p": float(table.max(axis=1).mean()),
                "table_entropy": float(ks.entropy(table).mean()),
                "table_p_true": float(table[rows, true].mean()),
                "table_accuracy": float((table.argmax(axis=1) == true).mean()),
                "evidence_weight": weight,
            }
        )
    fit = ks.fit_length(
        np.stack([num for num, _ in terms], axis=1),
        np.stack([den for _, den in terms], axis=1),
        seed=seed,
    )
    temperature = ks.fit_temperature(llm.reshape(-1, k), np.repeat(true, plan.max_answers + 1))
    return {
        "per_n": per_n,
        "fit": dataclasses.asdict(fit),
        "temperature": dataclasses.asdict(temperature),
        "entropy_of_uniform": math.log(k),
        "prompts": len(queries),
    }


async def paraphrase_section(
    score: Scorer, game: TwentyQuestions, cases: Sequence[MediQCase], plan: Plan, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 4])
    k = len(game.labels)
    w = plan.wordings
    q20: list[Query] = []
    for _ in range(plan.paraphrase_20q):
        history, asked = twentyq_history(game, rng, int(rng.integers(k)), int(rng.integers(0, 3)))
        a = int(rng.choice([i for i in range(len(game.questions)) if i not in asked]))
        shift = int(rng.integers(k))
        for wordings in (YES_WORDINGS[:w], NO_WORDINGS[:w]):
            q20 += [
                twentyq_query(game, (*history, QA(game.questions[a], t)), shift) for t in wordings
            ]
    bank = load_query_bank("internal_medicine")
    qmq: list[Query] = []
    for case in cases:
        fact = case.facts[int(rng.integers(len(case.facts)))]
        question = bank[int(rng.integers(len(bank)))]
        shift = int(rng.integers(len(case.labels)))
        qmq += [
            mediq_query(case, (QA(question, phrase_fact(fact, t)),), shift)
            for t in FACT_TEMPLATES[:w]
        ]
    p20 = np.asarray(await score(q20)).reshape(-1, w, k)
    pmq = np.asarray(await score(qmq)).reshape(-1, w, 4)
    # The floor: each group's first wording scored again, in a call (so batches) of its own.
    # Identical prompts differ only by the served dtype's batch dependence (bfloat16).
    again20 = np.asarray(await score(q20[::w])).reshape(-1, 1, k)
    againmq = np.asarray(await score(qmq[::w])).reshape(-1, 1, 4)
    return {
        "twentyq": dataclasses.asdict(ks.paraphrase_noise(p20)),
        "mediq": dataclasses.asdict(ks.paraphrase_noise(pmq)),
        "twentyq_same_prompt_rescored": dataclasses.asdict(
            ks.paraphrase_noise(np.concatenate([p20[:, :1], again20], axis=1))
        ),
        "mediq_same_prompt_rescored": dataclasses.asdict(
            ks.paraphrase_noise(np.concatenate([pmq[:, :1], againmq], axis=1))
        ),
        "twentyq_wordings": [list(YES_WORDINGS[:w]), list(NO_WORDINGS[:w])],
        "mediq_templates": list(FACT_TEMPLATES[:w]),
        "prompts": len(q20) + len(qmq) + len(again20) + len(againmq),
    }


def naming_question(animal: str) -> str:
    article = "an" if animal[:1].lower() in "aeiou" else "a"
    return f"Is the animal {article} {animal}?"


async def direct_section(
    score: Scorer, game: TwentyQuestions, plan: Plan, seed: int
) -> dict[str, Any]:
    """Diagnostic: does naming the animal ("Is the animal a zebra?" "Yes.") move its logit?"""
    rng = np.random.default_rng([seed, 5])
    k = len(game.labels)
    animals = [int(a) for a in rng.choice(k, size=min(plan.direct, k), replace=False)]
    queries: list[Query] = []
    for animal in animals:
        shift = int(rng.integers(k))
        question = naming_question(game.labels[animal])
        queries += [
            twentyq_query(game, history, shift)
            for history in ((), (QA(question, YES),), (QA(question, NO),))
        ]
    probs = np.asarray(await score(queries)).reshape(len(animals), 3, k)
    logits = ks.centered_logits(probs)
    rows = np.arange(len(animals))
    named = logits[rows, :, animals]  # (animals, 3): before, after yes, after no
    moved_yes, moved_no = named[:, 1] - named[:, 0], named[:, 2] - named[:, 0]
    top = probs.argmax(axis=2) == np.asarray(animals)[:, None]

    def mean_se(x: FloatArray) -> dict[str, float]:
        se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
        return {"mean": float(x.mean()), "se": se}

    return {
        "named_logit_moved_by_yes": mean_se(moved_yes),
        "named_logit_moved_by_no": mean_se(moved_no),
        "named_top_before": float(top[:, 0].mean()),
        "named_top_after_yes": float(top[:, 1].mean()),
        "named_p_after_yes": float(probs[rows, 1, animals].mean()),
        "items": len(animals),
        "prompts": len(queries),
    }


def _bias_sd(bias: dict[str, Any]) -> float:
    """The noise-corrected sd when there were items enough for it, else the raw one."""
    corrected = bias["sd_noise_corrected"]
    return float(bias["sd"] if corrected is None else corrected)


def knob_summary(sections: dict[str, Any]) -> dict[str, float | None]:
    """The knob strengths that resemble the model, in the tabular knobs' units (those measured)."""
    out: dict[str, float | None] = {}
    if pos := sections.get("position"):
        out["label_bias_20q"] = _bias_sd(pos["twentyq"])
        out["label_bias_mediq"] = _bias_sd(pos["mediq"])
        out["temperature_mediq"] = pos["mediq_temperature_single_order"]["t"]
    if pol := sections.get("polarity"):
        out["polarity"] = pol["s"]
        out["evidence_weight_yes"] = pol["weight_yes"]
        out["evidence_weight_no"] = pol["weight_no"]
    if length := sections.get("length"):
        out["length"] = length["fit"]["s"]
        out["length_beta"] = length["fit"]["beta"]
        out["temperature_20q"] = length["temperature"]["t"]
    if para := sections.get("paraphrase"):
        out["logit_noise_20q"] = para["twentyq"]["s"]
        out["logit_noise_mediq"] = para["mediq"]["s"]
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 2 <= args.wordings <= MAX_WORDINGS:
        raise SystemExit(f"--wordings must be in 2..{MAX_WORDINGS}")
    if not 2 <= args.max_answers <= 20:
        raise SystemExit("--max-answers must be in 2..20")
    plan = Plan.from_budget(args.prompts, max_answers=args.max_answers, wordings=args.wordings)
    game = make_game(20)
    rng = np.random.default_rng([args.seed, 0])
    cases = mediq_cases(plan.position_mediq + plan.paraphrase_mediq, rng, args.dataset)
    settings = Settings(llm_base_url=args.base_url, llm_model=args.model, llm_read_timeout_s=1800)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.model_knobs",
        "base_url": args.base_url,
        "model": args.model,
        "prompt_budget": args.prompts,
        "plan": dataclasses.asdict(plan),
        "seed": args.seed,
        "dataset": str(args.dataset),
        "seconds": {},
        "sections": {},
    }
    async with llm_http_client(settings, args.base_url) as http:
        gateway = LLMGateway(
            http=http, model=args.model, settings=settings, cache=LRUPosteriorCache(0),
            permutations=1,
        )  # fmt: skip
        score = Scorer(gateway)
        steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "position": lambda: position_section(
                score, game, cases[: plan.position_mediq], plan, args.seed
            ),
            "polarity": lambda: polarity_section(score, game, plan, args.seed),
            "length": lambda: length_section(score, game, plan, args.seed),
            "paraphrase": lambda: paraphrase_section(
                score, game, cases[plan.position_mediq :], plan, args.seed
            ),
            "direct": lambda: direct_section(score, game, plan, args.seed),
        }
        for name in args.sections:
            step = steps[name]
            started = time.perf_counter()
            report["sections"][name] = await step()
            report["seconds"][name] = round(time.perf_counter() - started, 1)
            if args.json:  # a section at a time, so a run cut short keeps what it measured
                write_json(args.json, report)
            print(f"{name}: {report['sections'][name]['prompts']} prompts, "
                  f"{report['seconds'][name]} s", flush=True)  # fmt: skip
        report["prompts_scored"] = score.scored
    report["knobs"] = knob_summary(report["sections"])
    return report


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: NaN and infinities are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite_or_none(report), indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="a running vLLM server")
    parser.add_argument("--model", required=True, help="its served model name")
    parser.add_argument("--prompts", type=int, default=400, help="budget the sections share")
    parser.add_argument("--max-answers", type=int, default=8, help="length: n = 0..this")
    parser.add_argument("--wordings", type=int, default=5, help=f"2..{MAX_WORDINGS}")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="default: all"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    report = asyncio.run(run(args))
    if args.json:
        write_json(args.json, report)
    print(json.dumps(_finite_or_none(report["knobs"]), indent=2))


if __name__ == "__main__":
    main()
