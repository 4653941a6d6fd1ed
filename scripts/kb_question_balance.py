"""How evenly each policy's questions split the current posterior in the default HPO world.

Prints, for steps 0-5 of 300 seeded test games (the bench defaults otherwise), the mean
posterior mass on the candidates annotated with the asked term, and the patients' yes rate.
Usage: .venv/bin/python scripts/kb_question_balance.py
"""

from __future__ import annotations

import numpy as np

from app.research.kb import KbBenchConfig, run_kb_sync


def main() -> None:
    run = run_kb_sync(KbBenchConfig(games=300, calibration_games=300))
    world = run.world
    assert run.result.selection is not None
    print("selection tau_0..5", [round(t, 3) for t in run.result.selection.thresholds[:6]])
    for name, result in run.result.policies.items():
        traces = result.test
        mass = [
            float(
                np.mean(
                    (traces.posteriors[:, k] * world.annotated[:, traces.asked[:, k]].T).sum(axis=1)
                )
            )
            for k in range(6)
        ]
        yes = traces.answered_yes[:, :6].mean(axis=0)
        print(f"{name:<12} annotated mass {np.round(mass, 2)} yes rate {np.round(yes, 2)}")


if __name__ == "__main__":
    main()
