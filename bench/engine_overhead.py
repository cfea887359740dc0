"""Driver CPU time per iteration against archive size, and end-to-end throughput with the sandbox in the loop.

    python bench/engine_overhead.py                 # sizes 100, 1k, 10k, 100k
    python bench/engine_overhead.py --sizes 100 1000 --iterations 300

For each size the archive is pre-loaded with that many programs (spread over a 32x32 grid on 4 islands), then the run
is resumed for ``--iterations`` children with the scripted mutator and an instant evaluator (it returns metrics
without running the candidate). Reported: the driver process's CPU time spent in the loop per iteration (Ray's
submission and result handling included; the resume-time archive read excluded). Flat numbers across sizes mean the
controller's cost does not grow with the archive.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from evolve.archive import ArchiveWriter
from evolve.loop import Evolution
from evolve.mutators.scripted import ScriptedMutator
from evolve.problem import load_problem
from evolve.schema import ProgramRecord
from evolve.settings import RunSettings
from evolve.types import program_id_for

SEED = """\
# EVOLVE-BLOCK-START
X = 0.5
Y = 0.25
Z = 3
# EVOLVE-BLOCK-END


def solve():
    return [X, Y, Z]
"""

INSTANT = """\
def evaluate(candidate):
    h = sum(map(ord, candidate.code))
    return {"score": (h % 1000) / 1000.0, "fx": (h % 97) / 97.0, "fy": (h % 89) / 89.0}
"""

SANDBOXED = """\
def evaluate(candidate):
    x, y, z = candidate.call("solve")
    return {"score": -(x - 1) ** 2 - (y - 2) ** 2, "fx": (x % 1.0), "fy": (y % 1.0)}
"""

TOML = """\
name = "bench"
seed = "seed.py"
evaluator = "evaluator.py"
[score]
metric = "score"
[[features]]
name = "fx"
min = 0
max = 1
bins = 32
[[features]]
name = "fy"
min = 0
max = 1
bins = 32
[[stages]]
name = "main"
function = "evaluate"
timeout = 30
"""


def make_problem(root: Path, evaluator: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "seed.py").write_text(SEED)
    (root / "evaluator.py").write_text(evaluator)
    (root / "problem.toml").write_text(TOML)
    return root


def preload(run_dir: Path, size: int, islands: int, rng: np.random.Generator) -> None:
    """Write ``size`` synthetic evaluated programs (the seed first) into a run folder."""
    with ArchiveWriter(run_dir, run_dir.name, segment_rows=8192, flush_seconds=3600) as writer:
        for i in range(size):
            code = SEED if i == 0 else SEED.replace("X = 0.5", f"X = {rng.random():.12f}")
            fx, fy = rng.random(), rng.random()
            score = float(rng.random())
            writer.append(ProgramRecord(
                program_id=program_id_for(code), parent_ids=() if i == 0 else (program_id_for(SEED),),
                island=i % islands, iteration=i, generation=0 if i == 0 else 1, code=code, status="ok",
                mutator="seed" if i == 0 else "scripted", score=score, fitness=score,
                metrics={"score": score, "fx": fx, "fy": fy}, features={"fx": fx, "fy": fy},
                cell=int(fx * 32) * 32 + int(fy * 32), created_at=time.time(), run_id=run_dir.name,
            ))


class TimedEvolution(Evolution):
    loop_cpu = 0.0
    loop_wall = 0.0

    def _loop(self) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        super()._loop()
        self.loop_cpu = time.process_time() - cpu
        self.loop_wall = time.perf_counter() - wall


def measure(problem_dir: Path, size: int, iterations: int, concurrency: int, workdir: Path) -> tuple[float, float]:
    problem = load_problem(problem_dir)
    run_dir = workdir / f"run-{size}"
    islands = 4
    preload(run_dir, size, islands, np.random.default_rng(size))
    settings = RunSettings(iterations=size - 1 + iterations, concurrency=concurrency, islands=islands,
                           migration_interval=50, seed=1)
    evolution = TimedEvolution(problem, settings, ScriptedMutator(), run_dir, run_dir.name, resume=True)
    evolution.run()
    done = evolution.done - (size - 1)
    return evolution.loop_cpu / max(1, done) * 1e3, done / evolution.loop_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        instant = make_problem(work / "instant", INSTANT)
        print(f"{'archive size':>12}  {'driver CPU ms/iter':>18}  {'iter/s':>8}   (instant evaluator)")
        for size in args.sizes:
            cpu_ms, rate = measure(instant, size, args.iterations, args.concurrency, work)
            print(f"{size:>12}  {cpu_ms:>18.3f}  {rate:>8.1f}", flush=True)
        sandboxed = make_problem(work / "sandboxed", SANDBOXED)
        cpu_ms, rate = measure(sandboxed, 100, min(args.iterations, 200), args.concurrency, work / "sbx")
        print(f"with the sandbox in the loop (archive 100): {rate:.1f} iterations/s end to end, "
              f"driver CPU {cpu_ms:.3f} ms/iter")
    ray.shutdown()


if __name__ == "__main__":
    main()
