"""Measure the tensor_rank seed (or the seed with some constants changed) through the real evaluator.

    python problems/tensor_rank/measure.py                                   # the seed as shipped
    python problems/tensor_rank/measure.py --set LEARNING_RATE=0.1 --set INIT_SCALE=0.3

Each ``--set NAME=value`` rewrites one ``NAME = ...`` line of the evolve block, which is what the ``tune`` mutator
does. Prints the mean score, the mean lowest rank per target and the seconds per evaluation over evaluation seeds
0..N-1. Scores depend on the machine's speed, hardly on its load: budgets are CPU seconds of the candidate's
process tree, counted on the trusted side.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from evolve import load_problem, program_id_for
from evolve.evaluation import evaluate_locally

HERE = Path(__file__).resolve().parent


def with_constants(code: str, settings: list[str]) -> str:
    for setting in settings:
        name, value = setting.split("=", 1)
        code, count = re.subn(rf"^{re.escape(name)} = .*$", f"{name} = {value}", code, count=1, flags=re.M)
        if not count:
            raise SystemExit(f"no line '{name} = ...' in the program")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--program", type=Path, default=HERE / "initial_program.py")
    args = parser.parse_args()
    problem = load_problem(HERE)
    code = with_constants(args.program.read_text(), args.set)
    rows = []
    for seed in range(args.seeds):
        start = time.monotonic()
        (outcome,) = evaluate_locally(problem, code, program_id_for(code), seed)
        if not outcome.passed:
            raise SystemExit(f"seed {seed}: {outcome.status.value}: {outcome.message}")
        rows.append((outcome.metrics, time.monotonic() - start))
    ranks = {key: statistics.fmean(m[key] for m, _ in rows) for key in rows[0][0] if key.startswith("rank_")}
    scores = [m["score"] for m, _ in rows]
    print(f"{' '.join(args.set) or 'seed as shipped'}: score {statistics.fmean(scores):.3f} ± "
          f"{statistics.stdev(scores):.3f}; mean ranks " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in ranks.items())
          + f"; {statistics.fmean(s for _, s in rows):.2f} s per evaluation")


if __name__ == "__main__":
    main()
