"""The LLM provider of the 20 Questions bench, without a server.

- A scorer that *is* the tabular model: the provider then plays exactly the tabular games
  (same questions, answers and posteriors), so the plumbing adds nothing of its own.
- The real gateway over the in-memory fake vLLM: yes/no prediction averages both option
  orders; ``bench20q --provider llm`` writes the tabular report's shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
from typer.testing import CliRunner, Result

from app.cli.twentyq import NO_LLM, register
from app.engine.banks import normalize_question
from app.engine.types import QA, CaseContext, History, PosteriorProvider, ProviderInfo
from app.errors import InvalidInputError
from app.llm import LLMGateway, LRUPosteriorCache
from app.research.twentyq import BenchPolicy, TwentyQuestions, make_game, make_games
from app.research.twentyq.llm import ANSWER_OPTIONS, LLMTwentyQ, check_llm_labels
from app.research.twentyq.simulate import CASE, INQUIRY, simulate_engine, simulate_tabular
from app.settings import get_settings
from app.worlds.tabular import NO, YES, TabularProvider
from tests.fake_vllm import FakeVLLM, unit_settings

GAME = make_game(20)
BUDGET = 4


class TableScorer:
    """A ``LabelScorer`` that answers from the tabular model (Bayes posterior, mixture)."""

    def __init__(self, game: TwentyQuestions) -> None:
        self.table = TabularProvider(game.model)
        self.index = {normalize_question(q): a for a, q in enumerate(game.questions)}
        self.answer_calls = 0

    @property
    def info(self) -> ProviderInfo:
        return ProviderInfo(model="table", prompt_version="v0", extra={"permutations": "1"})

    async def label_posteriors(
        self,
        *,
        case: CaseContext,
        histories: Sequence[History],
        inquiry: str,
        labels: Sequence[str],
    ) -> np.ndarray:
        if tuple(labels) == ANSWER_OPTIONS:
            self.answer_calls += 1
            a = self.index[normalize_question(inquiry)]
            p_yes = self.table.yes_probability(self.table.posteriors(histories))[:, a]
            return np.stack([p_yes, 1.0 - p_yes], axis=1)
        return await self.table.label_posteriors(
            case=case, histories=histories, inquiry=inquiry, labels=labels
        )


def _provider(temperature: float = 1.0) -> LLMTwentyQ:
    scorer = TableScorer(GAME)
    return LLMTwentyQ(
        labels_model=scorer, answers_model=scorer, bank=GAME.questions, temperature=temperature
    )


@pytest.mark.parametrize("policy", [BenchPolicy.CIP_NOMINAL, BenchPolicy.IP, BenchPolicy.RANDOM])
async def test_an_llm_that_is_the_table_plays_the_tabular_games(policy: BenchPolicy) -> None:
    games = make_games(n=3, split="test", seed=5, n_labels=20, max_questions=BUDGET, noise=0.2)
    table = simulate_tabular(
        TabularProvider(GAME.model),
        GAME.oracle_yes,
        games,
        policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=None,
    )
    llm = await simulate_engine(
        _provider(),
        labels=GAME.labels,
        bank=GAME.questions,
        oracle_yes=GAME.oracle_yes,
        games=games,
        policy=policy,
        alpha=0.1,
        max_questions=BUDGET,
        selection=None,
    )
    np.testing.assert_array_equal(table.asked, llm.asked)
    np.testing.assert_array_equal(table.no_gain, llm.no_gain)
    np.testing.assert_allclose(table.posteriors, llm.posteriors, rtol=0, atol=1e-12)


async def test_temperature_tempers_the_label_distribution_only() -> None:
    history = (QA(GAME.questions[0], YES), QA(GAME.questions[40], NO))
    hot = _provider(temperature=0.5)
    got = await hot.label_posteriors(
        case=CASE, histories=[(), history], inquiry=INQUIRY, labels=GAME.labels
    )
    # On the table, p ** (1 / T) is the tempered Bayes posterior, the tabular bench's knob.
    want = TabularProvider(GAME.model, temperature=0.5).posteriors([(), history])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # The answer weights are the LLM's own, untempered.
    cold = await _provider().simulate_answers(
        case=CASE, history=history, question=GAME.questions[7], labels=(), m=2
    )
    assert (
        await hot.simulate_answers(
            case=CASE, history=history, question=GAME.questions[7], labels=(), m=2
        )
        == cold
    )
    assert [a.text for a in cold] == [YES, NO]
    assert sum(a.weight for a in cold) == pytest.approx(1.0)
    one = await hot.simulate_answers(
        case=CASE, history=history, question=GAME.questions[7], labels=(), m=1
    )
    assert len(one) == 1 and one[0].weight == 1.0
    assert one[0].text == max(cold, key=lambda a: a.weight).text


async def test_candidates_limit_what_is_scored_per_turn() -> None:
    scorer = TableScorer(GAME)
    provider = LLMTwentyQ(labels_model=scorer, answers_model=scorer, bank=GAME.questions)
    games = make_games(n=2, split="test", seed=1, n_labels=20, max_questions=3, noise=0.0)
    traces = await simulate_engine(
        provider,
        labels=GAME.labels,
        bank=GAME.questions,
        oracle_yes=GAME.oracle_yes,
        games=games,
        policy=BenchPolicy.IP,
        alpha=0.1,
        max_questions=3,
        selection=None,
        max_candidates=5,
    )
    assert scorer.answer_calls == 2 * 3 * 5  # games x questions x candidates
    assert (traces.asked >= 0).all()
    assert await provider.propose_questions(
        case=CASE, history=(QA(GAME.questions[0], YES),), inquiry=INQUIRY, labels=[], n=2
    ) == list(GAME.questions[1:3])


def test_fifty_animals_are_refused() -> None:
    check_llm_labels(26)
    with pytest.raises(InvalidInputError, match="at most 26 labels, not 50"):
        check_llm_labels(50)


# --- the real gateway over the fake vLLM ------------------------------------------------------


def _gateway(fake: FakeVLLM, permutations: int, cache: LRUPosteriorCache) -> LLMGateway:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle), base_url="http://fake")
    return LLMGateway(
        http=http, model="fake", settings=unit_settings(), cache=cache, permutations=permutations
    )


def _fake_provider(
    fake: FakeVLLM, *, answer_permutations: int = 2, temperature: float = 1.0
) -> LLMTwentyQ:
    cache = LRUPosteriorCache(4096)
    return LLMTwentyQ(
        labels_model=_gateway(fake, 1, cache),
        answers_model=_gateway(fake, answer_permutations, cache),
        bank=GAME.questions,
        temperature=temperature,
    )


async def test_yes_no_prediction_averages_both_option_orders() -> None:
    fake = FakeVLLM(preference={"Yes": 1.0, "No": 0.0}, letter_a_bias=1.0)
    history = (QA(GAME.questions[0], YES),)
    both = await _fake_provider(fake).simulate_answers(
        case=CASE, history=history, question=GAME.questions[3], labels=(), m=2
    )
    # "A. Yes" scores 1 + 1 against 0; "A. No" scores 0 + 1 against 1.
    p_first = np.exp(2.0) / (np.exp(2.0) + 1.0)
    assert [a.text for a in both] == [YES, NO]
    assert both[0].weight == pytest.approx((p_first + 0.5) / 2)
    options = {
        tuple(line for line in prompt.splitlines() if line[1:3] == ". ")
        for body in fake.completions()
        for prompt in body["prompt"]
    }
    assert options == {("A. Yes", "B. No"), ("A. No", "B. Yes")}
    one = await _fake_provider(fake, answer_permutations=1).simulate_answers(
        case=CASE, history=history, question=GAME.questions[3], labels=(), m=2
    )
    assert one[0].weight == pytest.approx(p_first)  # the letter bias goes straight through


async def test_label_posteriors_read_twenty_letters() -> None:
    fake = FakeVLLM(preference={"zebra": 3.0, "lion": 1.0}, letter_a_bias=0.0)
    provider = _fake_provider(fake, temperature=2.0)
    out = await provider.label_posteriors(
        case=CASE, histories=[()], inquiry=INQUIRY, labels=GAME.labels
    )
    assert out.shape == (1, 20)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    z, lion, other = (GAME.labels.index(name) for name in ("zebra", "lion", "cow"))
    assert out[0, z] / out[0, other] == pytest.approx(np.exp(3.0 / 2.0))  # tempered at T = 2
    assert out[0, lion] / out[0, other] == pytest.approx(np.exp(1.0 / 2.0))
    assert "T. " in fake.completions()[0]["prompt"][0]  # letters A..T
    assert provider.info.model == "llm:fake:T=2"
    with pytest.raises(InvalidInputError):
        await provider.label_posteriors(
            case=CASE, histories=[()], inquiry=INQUIRY, labels=make_game(50).labels
        )


def _cli(factory: object = None) -> typer.Typer:
    cli = typer.Typer()
    register(cli, llm_factory=factory)  # type: ignore[arg-type]

    @cli.command()
    def version() -> None:  # a second command, so "bench20q" is a subcommand
        typer.echo("0")

    return cli


def test_bench20q_llm_writes_the_tabular_report_shape(tmp_path: Path) -> None:
    fake = FakeVLLM(preference={"zebra": 1.0, "Yes": 0.5}, letter_a_bias=0.5)

    def factory(game: TwentyQuestions, temperature: float) -> PosteriorProvider:
        return _fake_provider(fake, temperature=temperature)

    args = ["bench20q", "--provider", "llm", "--games", "3", "--calibration-games", "3"]
    args += ["--max-questions", "3", "--candidates", "4", "--policies", "cip,ip,random"]
    llm = CliRunner().invoke(_cli(factory), [*args, "--no-plots", "--out", str(tmp_path / "l")])
    assert llm.exit_code == 0, llm.output
    assert "s/game" in llm.output
    tab = CliRunner().invoke(
        _cli(), [*args[:1], *args[3:], "--no-plots", "--out", str(tmp_path / "t")]
    )
    assert tab.exit_code == 0, tab.output
    report = json.loads((tmp_path / "l" / "report.json").read_text())
    tabular = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report.keys() == tabular.keys()
    assert report["model"] == "llm:fake:T=1" and tabular["model"] == "tabular:awa2-20:T=1"
    assert report["settings"]["candidates"] == 4
    for name, summary in report["policies"].items():
        assert summary.keys() == tabular["policies"][name].keys()
        assert len(summary["steps"]) == 4
        assert summary["final"]["n"] == 3


def test_bench20q_llm_refuses_fifty_animals_before_any_server() -> None:
    result = CliRunner().invoke(_cli(), ["bench20q", "--provider", "llm", "--animals", "50"])
    assert result.exit_code == 2
    assert "at most 26 labels" in result.output and "--provider tabular" in result.output


def _invoke_with_env(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> Result:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(_cli(), ["bench20q", "--provider", "llm", "--games", "1"])
    finally:
        get_settings.cache_clear()


def test_bench20q_llm_says_when_the_server_is_not_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    result = _invoke_with_env(monkeypatch, PURSUIT_LLM_BASE_URL=closed, PURSUIT_LLM_MODEL="nothing")
    assert result.exit_code == 1
    assert f"{closed} is not ready" in result.output
    # Nothing configured and no local server (on a port where none runs).
    result = _invoke_with_env(
        monkeypatch,
        PURSUIT_LLM_BASE_URL=None,
        PURSUIT_LLM_MODEL=None,
        PURSUIT_LLM_PORT="9",
        PURSUIT_LLM_HOME=str(tmp_path),
    )
    assert result.exit_code == 2
    assert NO_LLM in result.output and "pursuit llm up" in result.output
