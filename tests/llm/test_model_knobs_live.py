"""benchmarks.model_knobs against the real local vLLM server, on a few prompts per section.

Checks the report's shape and that every statistic is finite and in its valid range; the
values themselves are the model's and are not asserted.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import pytest

from benchmarks import model_knobs

pytestmark = pytest.mark.llm


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _positive_or_none(value: Any) -> bool:
    return value is None or (_finite(value) and value > 0)


async def test_report_measures_the_live_server(live_server: tuple[str, str]) -> None:
    base_url, model = live_server
    args = argparse.Namespace(
        base_url=base_url,
        model=model,
        prompts=10,
        max_answers=2,
        wordings=2,
        dataset=model_knobs.DATASET,
        seed=0,
        sections=list(model_knobs.SECTIONS),
        json=None,
    )
    report = await model_knobs.run(args)
    plan = model_knobs.Plan(**report["plan"])
    sections = report["sections"]
    assert set(sections) == set(report["seconds"]) == set(model_knobs.SECTIONS)
    # Distinct prompts per section (the opening 20Q prompt, say, recurs within one).
    assert 0 < report["prompts_scored"] <= sum(s["prompts"] for s in sections.values())

    position = sections["position"]
    for name, k, items in (("twentyq", 20, plan.position_20q), ("mediq", 4, plan.position_mediq)):
        bias = position[name]
        assert len(bias["offsets"]) == k and bias["items"] == items
        assert abs(sum(bias["offsets"])) < 1e-6  # centred logits
        assert _finite(bias["sd"]) and bias["sd"] >= 0
        assert 0.0 < bias["first_share"] < 1.0
    for fit in (
        position["mediq_temperature_single_order"],
        position["mediq_temperature_all_orders_averaged"],
    ):
        assert _finite(fit["t"]) and fit["t"] > 0 and fit["nll_at_t"] <= fit["nll_at_1"] + 1e-9
        assert 0.0 <= fit["mean_p_true"] <= fit["mean_max_p"] <= 1.0

    polarity = sections["polarity"]
    assert polarity["items"] == plan.polarity
    assert _finite(polarity["weight_yes"]) and _finite(polarity["weight_no"])
    assert _positive_or_none(polarity["s"]) and _positive_or_none(polarity["evidence_weight"])
    assert all(_finite(polarity[f"mean_{key}"]) for key in ("moved_yes", "moved_no", "table_yes"))

    length = sections["length"]
    assert [row["n"] for row in length["per_n"]] == list(range(plan.max_answers + 1))
    for row in length["per_n"]:
        assert 0.0 < row["llm_max_p"] <= 1.0 and 0.0 < row["table_max_p"] <= 1.0
        assert 0.0 <= row["llm_entropy"] <= length["entropy_of_uniform"] + 1e-9
        assert 0.0 <= row["table_entropy"] <= length["entropy_of_uniform"] + 1e-9
        assert (row["evidence_weight"] is None) == (row["n"] == 0)
    assert length["fit"]["games"] == plan.length_games
    assert _finite(length["fit"]["beta"]) and len(length["fit"]["weights"]) == plan.max_answers

    paraphrase = sections["paraphrase"]
    for name, groups in (("twentyq", 2 * plan.paraphrase_20q), ("mediq", plan.paraphrase_mediq)):
        for key, wordings in ((name, plan.wordings), (f"{name}_same_prompt_rescored", 2)):
            noise = paraphrase[key]
            assert noise["groups"] == groups and noise["wordings"] == wordings
            assert _finite(noise["s"]) and noise["s"] >= 0 and 0.0 <= noise["top_changes"] <= 1.0

    direct = sections["direct"]
    assert direct["items"] == plan.direct and direct["prompts"] == 3 * plan.direct
    for key in ("named_logit_moved_by_yes", "named_logit_moved_by_no"):
        assert _finite(direct[key]["mean"]) and _finite(direct[key]["se"])
    for key in ("named_top_before", "named_top_after_yes", "named_p_after_yes"):
        assert 0.0 <= direct[key] <= 1.0

    knobs = report["knobs"]
    assert set(knobs) == set(model_knobs.knob_summary(sections))
    for key in ("label_bias_20q", "label_bias_mediq", "logit_noise_20q", "logit_noise_mediq"):
        assert _finite(knobs[key]) and knobs[key] >= 0
    assert knobs["temperature_20q"] > 0 and knobs["temperature_mediq"] > 0
