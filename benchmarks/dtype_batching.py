"""What batching does to posteriors and conformal sets, per served dtype (issue 15).

In bfloat16 a prompt's logprobs depend on what vLLM batches it with; in float32 on the CPU
they do not (or far less). This measures, on real MediQ prompts against one or more running
servers, how far that moves the product:

1. Prompts: the first ``--cases`` iMedQA dev cases, each at history lengths k = 0..T-1 (the
   case's first k atomic facts, each answering a seeded Internal Medicine bank question, as
   the retrieval patient does), through the gateway's own posterior prompt.
2. Each prompt is scored three ways, posterior cache off: ``batched`` (every prompt in one
   gateway call: ``llm_batch_size`` per request, requests concurrent, as a calibration run
   does), ``single`` (one prompt per request, one request at a time) and ``batched_again``
   (the batched call on a shuffled order: another batch composition).
3. Posterior movement between the modes: max, 99th percentile and mean absolute difference
   over every (prompt, label), and how often the top label changes.
4. Sets: the cases split in half. Per step k, the LAC threshold (alpha, exact rank) is
   computed on the calibration half from ``batched`` scores, as a calibration run would. On
   the other half the set of each prompt is built from ``batched`` and from ``single``
   posteriors at that same threshold (calibration batches one way, serving another): the
   share of sets that differ, the labels that move in or out, and coverage both ways. The
   threshold itself is recomputed from ``single`` scores to show how far it moves.
5. Seconds per mode and server, so dtypes compare as ratios measured in one run.

    .venv/bin/python -m benchmarks.dtype_batching \
        --server bfloat16=http://127.0.0.1:8001 --server float32=http://127.0.0.1:8003 \
        --cases 200 --json var/dtype-batching.json

Each server must serve the same model (``--model``, default smollm2-135m).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from app.conformal.rank import conformal_threshold
from app.datasets.mediq import MediQCase, load_mediq
from app.engine.banks import load_query_bank
from app.engine.types import QA, History
from app.llm.cache import LRUPosteriorCache
from app.llm.client import llm_http_client
from app.llm.gateway import LLMGateway
from app.settings import Settings

DATASET = Path("app/data/mediq/imedqa_dev.jsonl")
MODES = ("batched", "single", "batched_again")
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Item:
    """One prompt: a case at history length k."""

    case: MediQCase
    k: int
    history: History


def build_items(cases: Sequence[MediQCase], steps: int, seed: int) -> list[Item]:
    bank = load_query_bank("internal_medicine")
    rng = np.random.default_rng(seed)
    items: list[Item] = []
    for case in cases:
        questions = [bank[i] for i in rng.choice(len(bank), size=steps, replace=False)]
        facts = list(case.facts) or ["The patient cannot answer."]
        for k in range(steps):
            history = tuple(QA(questions[j], facts[j % len(facts)]) for j in range(k))
            items.append(Item(case=case, k=k, history=history))
    return items


async def _prompts(gateway: LLMGateway, items: Sequence[Item]) -> list[tuple[str, int]]:
    setup = await gateway._ensure_setup()
    out: list[tuple[str, int]] = []
    for item in items:
        table, orders = gateway.posterior_prompts(
            setup,
            case=item.case.case_context,
            histories=[item.history],
            inquiry=item.case.inquiry,
            labels=item.case.labels,
        )
        assert orders[0] == list(range(len(item.case.labels)))  # one identity order
        out.append((table[0][0], len(item.case.labels)))
    return out


async def _score_batched(
    gateway: LLMGateway, prompts: Sequence[tuple[str, int]], order: Sequence[int]
) -> list[tuple[float, ...]]:
    """Every prompt in gateway calls grouped by label count, in ``order``."""
    by_k: dict[int, list[str]] = {}
    for i in order:
        text, k = prompts[i]
        by_k.setdefault(k, []).append(text)
    scored: dict[str, tuple[float, ...]] = {}
    for k, texts in by_k.items():
        scored.update(await gateway.score_prompts(texts, k))
    return [scored[text] for text, _ in prompts]


async def _score_single(
    gateway: LLMGateway, prompts: Sequence[tuple[str, int]]
) -> list[tuple[float, ...]]:
    out: list[tuple[float, ...]] = []
    for text, k in prompts:
        out.append((await gateway.score_prompts([text], k))[text])
    return out


async def score_server(
    base_url: str, model: str, items: Sequence[Item], seed: int
) -> tuple[dict[str, list[tuple[float, ...]]], dict[str, float]]:
    settings = Settings(llm_base_url=base_url, llm_model=model, llm_read_timeout_s=1800)
    async with llm_http_client(settings, base_url) as http:
        gateway = LLMGateway(http=http, model=model, settings=settings, cache=LRUPosteriorCache(0))
        prompts = await _prompts(gateway, items)
        order = list(range(len(prompts)))
        shuffled = list(np.random.default_rng(seed + 1).permutation(len(prompts)))
        # Warm-up: one prompt, so setup and first-request costs are in no mode's time.
        await _score_single(gateway, prompts[:1])
        scores: dict[str, list[tuple[float, ...]]] = {}
        seconds: dict[str, float] = {}
        for mode in MODES:
            started = time.perf_counter()
            if mode == "single":
                scores[mode] = await _score_single(gateway, prompts)
            else:
                scores[mode] = await _score_batched(
                    gateway, prompts, order if mode == "batched" else shuffled
                )
            seconds[mode] = round(time.perf_counter() - started, 2)
            print(f"  {base_url} {mode}: {len(prompts)} prompts in {seconds[mode]:.1f} s")
    return scores, seconds


def movement(a: Sequence[tuple[float, ...]], b: Sequence[tuple[float, ...]]) -> dict[str, float]:
    diffs = np.concatenate([np.abs(np.subtract(x, y)) for x, y in zip(a, b, strict=True)])
    top_changed = sum(int(np.argmax(x) != np.argmax(y)) for x, y in zip(a, b, strict=True))
    return {
        "max_abs": float(diffs.max()),
        "p99_abs": float(np.quantile(diffs, 0.99)),
        "mean_abs": float(diffs.mean()),
        "identical_share": float(np.mean(diffs == 0.0)),
        "top_label_changed": top_changed,
        "prompts": len(a),
    }


def set_flips(
    items: Sequence[Item],
    cal_probs: Sequence[tuple[float, ...]],
    serve_probs: Sequence[tuple[float, ...]],
    alpha: float,
    steps: int,
) -> dict[str, Any]:
    """Thresholds from ``cal_probs`` on the first half of cases; sets on the second half."""
    case_ids = list(dict.fromkeys(item.case.case_id for item in items))
    calibration = set(case_ids[: len(case_ids) // 2])
    per_step: list[dict[str, Any]] = []
    totals = {"sets": 0, "sets_changed": 0, "labels_in": 0, "labels_out": 0}
    for k in range(steps):
        rows = [i for i, item in enumerate(items) if item.k == k]
        cal = [i for i in rows if items[i].case.case_id in calibration]
        test = [i for i in rows if items[i].case.case_id not in calibration]

        def true_p(probs: Sequence[tuple[float, ...]], i: int) -> float:
            return probs[i][items[i].case.answer_index]

        tau = conformal_threshold([1.0 - true_p(cal_probs, i) for i in cal], alpha)
        tau_serve = conformal_threshold([1.0 - true_p(serve_probs, i) for i in cal], alpha)
        changed = labels_in = labels_out = covered_cal = covered_serve = 0
        for i in test:
            a = 1.0 - np.asarray(cal_probs[i]) <= tau.value
            b = 1.0 - np.asarray(serve_probs[i]) <= tau.value
            changed += int((a != b).any())
            labels_in += int((b & ~a).sum())
            labels_out += int((a & ~b).sum())
            covered_cal += int(a[items[i].case.answer_index])
            covered_serve += int(b[items[i].case.answer_index])
        per_step.append(
            {
                "k": k,
                "n_cal": len(cal),
                "n_test": len(test),
                "threshold": tau.value,
                "threshold_from_serving_scores": tau_serve.value,
                "sets_changed": changed,
                "labels_in": labels_in,
                "labels_out": labels_out,
                "coverage_calibration_scoring": covered_cal / len(test),
                "coverage_serving_scoring": covered_serve / len(test),
            }
        )
        totals["sets"] += len(test)
        totals["sets_changed"] += changed
        totals["labels_in"] += labels_in
        totals["labels_out"] += labels_out
    return {
        "per_step": per_step,
        **totals,
        "share_changed": totals["sets_changed"] / totals["sets"],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cases = load_mediq(args.dataset, strict=False).cases[: args.cases]
    items = build_items(cases, args.steps, args.seed)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.dtype_batching",
        "dataset": str(args.dataset),
        "cases": len(cases),
        "steps": args.steps,
        "prompts": len(items),
        "alpha": args.alpha,
        "seed": args.seed,
        "llm_batch_size": Settings().llm_batch_size,
        "servers": {},
    }
    for spec in args.server:
        name, _, url = spec.partition("=")
        print(f"scoring on {name} ({url}) ...")
        scores, seconds = await score_server(url, args.model, items, args.seed)
        report["servers"][name] = {
            "base_url": url,
            "seconds": seconds,
            "movement": {
                "batched_vs_single": movement(scores["batched"], scores["single"]),
                "batched_vs_batched_again": movement(scores["batched"], scores["batched_again"]),
            },
            "sets": {
                "calibration_batched_serving_single": set_flips(
                    items, scores["batched"], scores["single"], args.alpha, args.steps
                ),
                "calibration_batched_serving_batched_again": set_flips(
                    items, scores["batched"], scores["batched_again"], args.alpha, args.steps
                ),
            },
        }
    names = list(report["servers"])
    if len(names) >= 2:
        base = report["servers"][names[0]]["seconds"]
        report["time_ratios_vs_" + names[0]] = {
            name: {m: round(report["servers"][name]["seconds"][m] / base[m], 2) for m in MODES}
            for name in names[1:]
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        help="NAME=BASE_URL of a running vLLM server (repeatable), e.g. float32=http://...",
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4, help="history lengths 0..steps-1")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
