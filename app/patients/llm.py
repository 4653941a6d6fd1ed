"""MediQ's fact-select patient on the LLM: it picks the facts that answer a question.

Used by calibration runs and benchmarks only, never by serving. The model only picks fact
numbers (greedy, under a JSON schema); the reply is built from the selected facts
themselves, so it can never state anything the case lacks. The prompt is
``app.llm.prompts`` (``SYSTEM_FACTS``, ``facts_user``); the request goes through the
gateway (``LLMGateway.generate``), the only module that builds requests to vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from app.errors import UpstreamBadOutputError
from app.llm import prompts
from app.llm.gateway import LLMGateway

__all__ = ["LLMPatient"]

_MAX_FACTS_CHOSEN = 8


def _fact_ids_schema(n_facts: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "fact_ids": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": n_facts},
                "maxItems": min(n_facts, _MAX_FACTS_CHOSEN),
            }
        },
        "required": ["fact_ids"],
        "additionalProperties": False,
    }


def _reply(facts: Sequence[str], output: str) -> str:
    """The selected facts, in case order; ``CANNOT_ANSWER`` when none is selected."""
    try:
        ids = json.loads(output)["fact_ids"]
        chosen = sorted({int(x) for x in ids if 1 <= int(x) <= len(facts)})
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamBadOutputError("LLM returned unparseable fact selection") from exc
    return " ".join(facts[j - 1] for j in chosen) if chosen else prompts.CANNOT_ANSWER


class LLMPatient:
    """A ``SimulatedPatient``: MediQ's fact-select patient, asking the gateway's model."""

    def __init__(self, gateway: LLMGateway) -> None:
        self._gateway = gateway

    async def patient_reply(self, *, facts: Sequence[str], question: str) -> str:
        """The facts that answer ``question``, verbatim (or ``CANNOT_ANSWER``)."""
        (reply,) = await self.patient_replies(facts=facts, questions=[question])
        return reply

    async def patient_replies(self, *, facts: Sequence[str], questions: Sequence[str]) -> list[str]:
        """``patient_reply`` for several questions about one case, in one request."""
        facts = [f.strip() for f in facts if f.strip()]
        if not questions:
            return []
        if not facts:
            return [prompts.CANNOT_ANSWER for _ in questions]
        outputs = await self._gateway.generate(
            system=prompts.SYSTEM_FACTS,
            users=[prompts.facts_user(facts, q) for q in questions],
            max_tokens=32 + 8 * min(len(facts), _MAX_FACTS_CHOSEN),
            json_schema=_fact_ids_schema(len(facts)),
            op="patient",
        )
        return [_reply(facts, output) for output in outputs]
