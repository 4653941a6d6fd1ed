"""``bench20q --provider llm`` against the real local vLLM server (SmolLM2-135M by default).

Small on purpose (a minute or so on a 2-core CPU): two games per split, two questions,
three candidate questions a turn. The numbers are checked for sanity, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from app.engine.types import QA
from app.research.twentyq import make_game
from app.research.twentyq.llm import LLMFactory, LLMTwentyQ
from app.research.twentyq.simulate import CASE, INQUIRY
from app.settings import Settings, get_settings
from app.worlds.tabular import NO, YES
from tests.cli.test_twentyq_cli import app

pytestmark = pytest.mark.llm

GAME = make_game(20)
BUDGET = 2
GAMES = 2
ARGS = [
    "bench20q",
    *("--games", str(GAMES), "--calibration-games", str(GAMES), "--selection-games", "2"),
    *("--max-questions", str(BUDGET), "--candidates", "3", "--policies", "cip,ip,random"),
    "--no-plots",
]


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((path / "report.json").read_text())
    return report


def test_bench20q_llm_runs_and_reports_sane_numbers(
    live_server: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    base_url, model = live_server
    monkeypatch.setenv("PURSUIT_LLM_BASE_URL", base_url)
    monkeypatch.setenv("PURSUIT_LLM_MODEL", model)
    get_settings.cache_clear()
    try:
        llm = CliRunner().invoke(app(), [*ARGS, "--provider", "llm", "--out", str(tmp_path / "l")])
    finally:
        get_settings.cache_clear()
    assert llm.exit_code == 0, llm.output
    tab = CliRunner().invoke(app(), [*ARGS, "--out", str(tmp_path / "t")])
    assert tab.exit_code == 0, tab.output

    report, tabular = _report(tmp_path / "l"), _report(tmp_path / "t")
    assert report.keys() == tabular.keys()
    assert report["model"] == f"llm:{model}:T=1"
    assert report["cases"] == GAMES
    assert report["run"]["llm"] == f"{model} at {base_url}"
    for name, summary in report["policies"].items():
        assert summary.keys() == tabular["policies"][name].keys()
        assert [s["step"] for s in summary["steps"]] == list(range(BUDGET + 1))
        for step in summary["steps"]:
            assert step["n"] == GAMES and step["n_cal"] == GAMES
            assert 0 <= step["accuracy"] <= 1 and 0 <= step["coverage"] <= 1
            # Sets are never empty; with 2 calibration games tau_k is +inf: the full set.
            assert step["mean_set_size"] == 20
        final = summary["final"]
        assert final["n"] == GAMES and final["coverage"] == 1.0
        assert 0 <= final["mean_questions"] <= BUDGET
        assert sum(final["stop_reasons"].values()) == GAMES
        assert report["seconds_per_game"][name] >= 0
    prompts = report["run"]["llm prompts"]
    assert prompts["T=1 cip"]["scored"] > 0  # the first policy finds an empty cache
    assert "LLM prompts:" in llm.output


async def test_llm_posteriors_and_answer_weights_are_distributions(
    live_server: tuple[str, str],
) -> None:
    base_url, model = live_server
    settings = Settings()
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        factory = LLMFactory(http=http, settings=settings, model=model)
        plain, hot = factory(GAME, 1.0), factory(GAME, 0.25)
        assert isinstance(plain, LLMTwentyQ) and isinstance(hot, LLMTwentyQ)
        first = (QA(GAME.questions[0], YES),)
        histories = [(), first, (*first, QA(GAME.questions[50], NO))]
        probs = await plain.label_posteriors(
            case=CASE, histories=histories, inquiry=INQUIRY, labels=GAME.labels
        )
        assert probs.shape == (3, 20) and (probs > 0).all()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        sharp = await hot.label_posteriors(
            case=CASE, histories=histories, inquiry=INQUIRY, labels=GAME.labels
        )
        np.testing.assert_allclose(sharp.sum(axis=1), 1.0, atol=1e-12)
        assert (sharp.max(axis=1) >= probs.max(axis=1)).all()  # over-confident at T < 1
        answers = await plain.simulate_answers(
            case=CASE, history=first, question=GAME.questions[7], labels=(), m=2
        )
        assert [a.text for a in answers] == [YES, NO]
        assert sum(a.weight for a in answers) == pytest.approx(1.0)
        assert all(0 < a.weight < 1 for a in answers)
