"""The README's first command, measured: valid-child rate and best score of ``evolve run problems/circle_packing``.

Runs ``evolve run PROBLEM --seed S --run-dir DIR --quiet`` (the CLI, defaults from ``problem.toml``: 200 iterations of
``tune``) once per seed, then reads each run's archive. A child is *valid* when its evaluation passed (status ``ok``);
identical children (``duplicate``) are not evaluated and counted apart.

    python bench/tune_demo.py                      # seeds 0 1 2 3 4, defaults
    python bench/tune_demo.py --seeds 0 1 --iterations 50 --problem problems/circle_packing
    python bench/tune_demo.py --plain              # tune without learning (every literal alike), for comparison

``--plain`` cannot be asked of the CLI: those runs go through ``evolve.run(...)`` in this process with
``TuneMutator(learn=False)``, with the same settings the CLI uses (one local Ray instance for all seeds).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoRun:
    seed: int
    children: int
    ok: int
    duplicates: int
    failures: dict[str, int]
    seed_score: float | None
    best_score: float | None
    wall_seconds: float

    @property
    def evaluated(self) -> int:
        return self.children - self.duplicates

    @property
    def valid_rate(self) -> float:
        return self.ok / self.evaluated if self.evaluated else 0.0


def run_once(problem: Path, seed: int, iterations: int | None, workdir: Path, plain: bool = False) -> DemoRun:
    from evolve.query import RunArchive

    run_dir = workdir / f"seed{seed}"
    start = time.monotonic()
    if plain:
        import evolve
        from evolve.mutators.tune import TuneMutator

        evolve.run(problem, mutator=TuneMutator(learn=False), seed=seed, iterations=iterations, run_dir=run_dir)
    else:
        cmd = [sys.executable, "-m", "evolve.cli", "run", str(problem), "--seed", str(seed), "--run-dir",
               str(run_dir), "--quiet"]
        if iterations is not None:
            cmd += ["--iterations", str(iterations)]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            raise SystemExit(f"seed {seed}: evolve run failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    wall = time.monotonic() - start
    with RunArchive(run_dir) as archive:
        counts = dict(archive.tuples("SELECT status, count(DISTINCT program_id) FROM summary WHERE iteration > 0 "
                                     "GROUP BY status"))
        best = archive.best()
        seed_row = archive.seed()
    failures = {s: int(n) for s, n in counts.items() if s not in ("ok", "duplicate")}
    return DemoRun(seed=seed, children=int(sum(counts.values())), ok=int(counts.get("ok", 0)),
                   duplicates=int(counts.get("duplicate", 0)), failures=failures,
                   seed_score=seed_row["score"] if seed_row else None,
                   best_score=best["score"] if best else None, wall_seconds=wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", type=Path, default=ROOT / "problems" / "circle_packing")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--iterations", type=int, default=None, help="default: the problem's own (200)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs in this folder")
    parser.add_argument("--plain", action="store_true", help="tune without learning, through evolve.run(...)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tune-demo-") as tmp:
        workdir = args.keep or Path(tmp)
        runs = []
        print("| seed | children | valid (ok / evaluated) | duplicates | failures | seed score | best score | wall s |")
        print("|---|---|---|---|---|---|---|---|")
        for seed in args.seeds:
            run = run_once(args.problem.resolve(), seed, args.iterations, workdir, args.plain)
            runs.append(run)
            failures = ", ".join(f"{k} {v}" for k, v in sorted(run.failures.items())) or "none"
            print(f"| {seed} | {run.children} | {run.valid_rate:.0%} ({run.ok}/{run.evaluated}) | {run.duplicates} | "
                  f"{failures} | {run.seed_score:.4f} | {run.best_score:.4f} | {run.wall_seconds:.1f} |", flush=True)
    bests = [r.best_score for r in runs if r.best_score is not None]
    print(f"\nmean valid rate {statistics.mean(r.valid_rate for r in runs):.0%}; best score mean "
          f"{statistics.mean(bests):.4f}, min {min(bests):.4f}, max {max(bests):.4f} over {len(runs)} seeds")


if __name__ == "__main__":
    main()
