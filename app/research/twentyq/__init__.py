"""20 Questions on Animals with Attributes: the C-IP paper's game as a benchmark.

``make_game`` builds the game (labels, question bank, tabular model, oracle answers);
``run_bench`` calibrates and tests policies over seeded games; ``cli.register`` adds the
``bench20q`` command.
"""

from app.research.twentyq.bench import (
    BenchConfig,
    PolicyResult,
    ProviderFactory,
    RunResult,
    records_from_traces,
    run_bench,
    run_bench_sync,
    run_temperature,
    tabular_factory,
)
from app.research.twentyq.data import Awa2, TwentyQuestions, load_awa2, make_game
from app.research.twentyq.simulate import (
    BenchPolicy,
    Games,
    Traces,
    make_games,
    simulate_engine,
    simulate_tabular,
)

__all__ = [
    "Awa2",
    "BenchConfig",
    "BenchPolicy",
    "Games",
    "PolicyResult",
    "ProviderFactory",
    "RunResult",
    "Traces",
    "TwentyQuestions",
    "load_awa2",
    "make_game",
    "make_games",
    "records_from_traces",
    "run_bench",
    "run_bench_sync",
    "run_temperature",
    "simulate_engine",
    "simulate_tabular",
    "tabular_factory",
]
