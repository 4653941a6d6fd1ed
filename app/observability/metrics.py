"""What Pursuit measures about itself, and the wrappers that measure it.

No label carries patient text or ids of patients: routes are templates
(``/v1/sessions/{session_id}``), policies and stop reasons are small enums.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.engine.options import AnswerOptions, provider_options
from app.engine.types import CaseContext, History, PosteriorProvider, ProviderInfo, WeightedAnswer
from app.llm.cache import Probs, PurgeableCache

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_latency = Histogram(
            "pursuit_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_calls = Counter(
            "pursuit_llm_calls_total",
            "Gateway operations by kind.",
            ["operation", "outcome"],
            registry=r,
        )
        self.llm_latency = Histogram(
            "pursuit_llm_call_duration_seconds",
            "Gateway operation latency.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_prompts = Counter(
            "pursuit_llm_posterior_prompts_total", "Posterior histories scored.", registry=r
        )
        self.cache_lookups = Counter(
            "pursuit_posterior_cache_lookups_total",
            "Posterior cache lookups.",
            ["result"],
            registry=r,
        )
        self.set_size = Histogram(
            "pursuit_differential_set_size",
            "Size of the differential shown after each turn.",
            ["calibrated"],
            buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 26),
            registry=r,
        )
        self.stops = Counter(
            "pursuit_interview_stops_total",
            "Interviews stopping, by reason.",
            ["reason"],
            registry=r,
        )
        self.llm_dropped = Counter(
            "pursuit_llm_output_dropped_total",
            "Model output the screen dropped (app.llm.screening), by kind and reason.",
            ["kind", "reason"],
            registry=r,
        )
        self.turns = Counter(
            "pursuit_interview_turns_total", "Interview turns planned.", ["policy"], registry=r
        )
        self.calibration_progress = Gauge(
            "pursuit_calibration_progress_ratio",
            "Finished fraction of each queued or running calibration.",
            ["calibration_id"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredCache:
    """A posterior cache that counts hits and misses."""

    def __init__(self, inner: PurgeableCache, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def get_many(self, keys: Sequence[str]) -> list[Probs | None]:
        values = await self._inner.get_many(keys)
        hits = sum(v is not None for v in values)
        self._metrics.cache_lookups.labels("hit").inc(hits)
        self._metrics.cache_lookups.labels("miss").inc(len(values) - hits)
        return values

    async def set_many(self, items: Mapping[str, Probs]) -> None:
        await self._inner.set_many(items)

    async def purge(self, scope: str) -> int:
        return await self._inner.purge(scope)


class MeteredProvider:
    """A ``PosteriorProvider`` that times and counts each operation of the one it wraps."""

    def __init__(self, inner: PosteriorProvider, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    @property
    def info(self) -> ProviderInfo:
        return self._inner.info

    def answer_options(self, question: str) -> AnswerOptions | None:
        """The wrapped provider's options for its question (not an LLM call: not metered)."""
        return provider_options(self._inner, question)

    async def _timed(self, operation: str, call: Any) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await call
            outcome = "ok"
            return result
        finally:
            self._metrics.llm_calls.labels(operation, outcome).inc()
            self._metrics.llm_latency.labels(operation).observe(time.perf_counter() - started)

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> npt.NDArray[np.float64]:
        self._metrics.llm_prompts.inc(len(histories))
        result: npt.NDArray[np.float64] = await self._timed(
            "posteriors",
            self._inner.label_posteriors(
                case=case, histories=histories, inquiry=inquiry, labels=labels
            ),
        )
        return result

    async def propose_questions(
        self, *, case: CaseContext, history: History, inquiry: str, labels: Sequence[str], n: int
    ) -> list[str]:
        result: list[str] = await self._timed(
            "propose",
            self._inner.propose_questions(
                case=case, history=history, inquiry=inquiry, labels=labels, n=n
            ),
        )
        return result

    async def simulate_answers(
        self,
        *,
        case: CaseContext,
        history: History,
        question: str,
        labels: Sequence[str],
        m: int,
    ) -> list[WeightedAnswer]:
        result: list[WeightedAnswer] = await self._timed(
            "simulate",
            self._inner.simulate_answers(
                case=case, history=history, question=question, labels=labels, m=m
            ),
        )
        return result
