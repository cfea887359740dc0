"""Reproduce the optimizer problem's reference figures (the README's tables).

    python problems/optimizer/baselines.py tune      # Adam's learning rate per task -> evaluator.ADAM_LR
    python problems/optimizer/baselines.py measure   # SGD / momentum / Adam scores through the real evaluator

``tune`` trains Adam on instance seeds the evaluation never uses (small integers; evaluation instances use 64-bit
seeds derived from the per-evaluation seed). ``measure`` runs ``evolve.evaluation.evaluate_locally`` on each
baseline program for evaluation seeds 0..N-1 and prints mean, standard deviation and seconds per evaluation.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import evaluator  # noqa: E402 - the problem folder is not a package
from optimizer_tasks import make_instance, train  # noqa: E402

BASELINES = {
    "sgd (seed)": HERE / "initial_program.py",
    "momentum": HERE / "baselines" / "momentum.py",
    "adam": HERE / "baselines" / "adam.py",
}
LR_GRID = tuple(10 ** (k / 4) for k in range(-16, 5))


def tune(seeds: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for spec in evaluator.TRAIN_SUITE + evaluator.HELDOUT_SUITE:
        scores = []
        for lr in LR_GRID:
            logs = []
            for seed in range(seeds):
                instance = make_instance(spec, seed)
                with np.errstate(all="ignore"):
                    result = train(np, instance, *evaluator.adam_rule(lr))
                loss = evaluator.excess_loss(instance, result.params)
                logs.append(math.log10(max(loss, evaluator.LOSS_FLOOR)) if math.isfinite(loss) else math.inf)
            scores.append(statistics.fmean(logs))
        k = int(np.argmin(scores))
        best[spec.name] = round(LR_GRID[k], 5)
        print(f"{spec.name:<12} lr {LR_GRID[k]:.4g}  mean log10 excess loss {scores[k]:.2f}", flush=True)
    return best


def measure(seeds: int) -> None:
    from evolve import load_problem, program_id_for
    from evolve.evaluation import evaluate_locally, load_evaluator, run_cascade

    problem = load_problem(HERE)
    loaded = load_evaluator(problem)  # the module evaluate_locally uses (not the one imported above)
    print("| program | score (train) | held-out score | train - held-out | seconds per evaluation |")
    print("|---|---|---|---|---|")
    for name, path in BASELINES.items():
        code = path.read_text()
        scores, heldouts, seconds = [], [], []
        for seed in range(seeds):
            loaded.reference_loss.cache_clear()  # charge every evaluation its Adam references, as in a run
            start = time.monotonic()
            outcomes = evaluate_locally(problem, code, program_id_for(code), seed)
            outcomes += run_cascade(problem, problem.heldout_stages, code, program_id_for(code), seed)
            seconds.append(time.monotonic() - start)
            metrics = {k: v for o in outcomes for k, v in o.metrics.items()}
            scores.append(metrics["score"])
            heldouts.append(metrics.get("heldout_score", math.nan))
        gaps = [s - h for s, h in zip(scores, heldouts, strict=True)]
        print(f"| {name} | {statistics.fmean(scores):.2f} ± {statistics.stdev(scores):.2f} | "
              f"{statistics.fmean(heldouts):.2f} ± {statistics.stdev(heldouts):.2f} | "
              f"{statistics.fmean(gaps):.2f} ± {statistics.stdev(gaps):.2f} | "
              f"{statistics.fmean(seconds):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("tune", "measure"))
    parser.add_argument("--seeds", type=int, default=None, help="tuning instances per task (5) / evaluation seeds (10)")
    args = parser.parse_args()
    if args.what == "tune":
        print(tune(args.seeds or 5))
    else:
        measure(args.seeds or 10)


if __name__ == "__main__":
    main()
