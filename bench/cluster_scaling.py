"""Throughput and scaling efficiency of the evolution loop on simulated Ray clusters of 1, 2, 4 and 8 worker nodes.

    python bench/cluster_scaling.py                              # 1, 2, 4, 8 nodes x 2 CPUs, 1 s evaluations
    python bench/cluster_scaling.py --nodes 1 2 --eval-seconds 0.5 --rounds 4

One ``ray.cluster_utils.Cluster`` on this machine: a head declaring no CPU (it only hosts the driver, as in
cluster.yaml) and worker nodes declaring ``--cpus-per-node`` logical CPUs each, added as the benchmark goes from one
cluster size to the next. Each evaluation is a single stage whose trusted evaluator sleeps ``--eval-seconds`` and
returns metrics without starting the candidate: it measures the engine (mutation, Ray scheduling across nodes,
result integration, archive writes), not the sandbox, so sleeping evaluations need no real cores and 8 simulated
nodes fit on 2. Children come from a mutator that returns a unique valid child per iteration (no LLM, no duplicate
children), and the run uses the default concurrency, which follows the cluster (2 programs in flight per slot).

Per cluster size, ``--rounds`` waves of evaluations (``rounds x slots`` children) are timed inside the driver loop
after a warm-up that starts a Ray worker process on every slot and pays its one-time costs (imports, the sandbox's
capability probe: ~0.4 s of CPU per process, which 2 shared cores serialize; the warm-up column shows it). Reported:

* evals/s: evaluations finished per second of loop wall time;
* vs ideal: evals/s divided by slots / eval-seconds (every slot busy all the time);
* scaling: evals/s divided by (nodes x the 1-node evals/s), the usual scaling efficiency;
* driver CPU ms/eval: the driver process's CPU time (all its threads, Ray's included) per evaluation;
* bare Ray/s, vs bare: the same number of sleeping tasks submitted at once as plain Ray tasks, and evolve's evals/s
  as a fraction of it: what the engine costs on top of Ray on this cluster;
* load avg: the machine's 1-minute load average after the size ran (other processes compete for the 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

import evolve.worker
from evolve.loop import Evolution
from evolve.mutators.base import MutationRequest, Proposal
from evolve.problem import Problem, StageSpec, load_problem
from evolve.settings import RunSettings

SEED = """\
# EVOLVE-BLOCK-START
X = 0.5
VARIANT = 0
# EVOLVE-BLOCK-END


def solve():
    return [X, VARIANT]
"""

EVALUATOR = """\
import time

SECONDS = {seconds!r}


def evaluate(candidate):
    time.sleep(SECONDS)  # trusted side: a fixed-time evaluation that uses no CPU
    h = sum(map(ord, candidate.code))
    return {{"score": (h % 1000) / 1000.0, "fx": (h % 97) / 97.0}}
"""

TOML = """\
name = "scaling"
seed = "seed.py"
evaluator = "evaluator.py"
[score]
metric = "score"
[[features]]
name = "fx"
min = 0
max = 1
bins = 16
[[stages]]
name = "main"
function = "evaluate"
timeout = 60
cpus = 1
"""


@dataclass(frozen=True)
class UniqueChildren:
    """A unique, valid child per iteration: the benchmark's load has no duplicates and no rejected edits."""

    name: str = "unique"

    def propose(self, request: MutationRequest) -> Proposal:
        code = SEED.replace("VARIANT = 0", f"VARIANT = {request.iteration}")
        return Proposal(response=f"VARIANT = {request.iteration}", mutator=self.name, child_code=code)


class TimedEvolution(Evolution):
    """Times the steady-state loop only (the seed's lone evaluation before it is excluded)."""

    loop_cpu = 0.0
    loop_wall = 0.0
    evaluated_before_loop = 0

    def _loop(self) -> None:
        self.evaluated_before_loop = self.evaluated_this_session
        cpu, wall = time.process_time(), time.perf_counter()
        super()._loop()
        self.loop_cpu = time.process_time() - cpu
        self.loop_wall = time.perf_counter() - wall


@dataclass(frozen=True)
class Measurement:
    nodes: int
    slots: int
    evaluations: int
    wall: float
    driver_cpu: float

    @property
    def rate(self) -> float:
        return self.evaluations / self.wall

    def vs_ideal(self, eval_seconds: float) -> float:
        return self.rate / (self.slots / eval_seconds)


def make_problem(root: Path, eval_seconds: float) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "seed.py").write_text(SEED)
    (root / "evaluator.py").write_text(EVALUATOR.format(seconds=eval_seconds))
    (root / "problem.toml").write_text(TOML)
    return root


@ray.remote(num_cpus=1)
def _warm(problem: Problem, seconds: float) -> str:
    from evolve.worker import make_stage_sandbox

    # A worker process's one-time costs, paid here rather than in the timing: the evaluation task's imports and
    # the sandbox's capability probe (about 0.4 s of CPU per process).
    make_stage_sandbox(problem, problem.stages[0], None)
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()


def warm_up(problem: Problem, slots: int) -> tuple[int, float]:
    """Occupy every slot at once so each gets a live, initialized worker process.

    Returns the number of nodes that answered and the seconds it took.
    """
    start = time.perf_counter()
    nodes = len(set(ray.get([_warm.remote(problem, 1.0) for _ in range(slots)])))
    return nodes, time.perf_counter() - start


@ray.remote(num_cpus=1)
def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def bare_ray_rate(slots: int, rounds: int, eval_seconds: float, strategy: str | None) -> float:
    """The same load as plain Ray tasks submitted all at once: what Ray alone achieves on this cluster."""
    task = _sleep.options(scheduling_strategy=strategy) if strategy else _sleep
    start = time.perf_counter()
    ray.get([task.remote(eval_seconds) for _ in range(rounds * slots)])
    return rounds * slots / (time.perf_counter() - start)


def override_strategy(strategy: str) -> None:
    """Make the engine's evaluation tasks use ``strategy`` (an experiment; the engine's default is left alone)."""
    engine_options = evolve.worker.stage_options

    def options(stage: StageSpec) -> dict[str, Any]:
        return {**engine_options(stage), "scheduling_strategy": strategy}

    evolve.worker.stage_options = options


def wait_for_cpus(total: float, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while ray.cluster_resources().get("CPU", 0.0) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster did not reach {total} CPUs")
        time.sleep(0.2)


def measure(problem_dir: Path, run_dir: Path, nodes: int, slots: int, rounds: int) -> Measurement:
    settings = RunSettings(iterations=rounds * slots, concurrency=0, islands=2, migration_interval=50, seed=1,
                           flush_seconds=5.0)
    evolution = TimedEvolution(load_problem(problem_dir), settings, UniqueChildren(), run_dir, run_dir.name)
    evolution.run()
    evaluations = evolution.evaluated_this_session - evolution.evaluated_before_loop
    return Measurement(nodes, slots, evaluations, evolution.loop_wall, evolution.loop_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8], help="cluster sizes, increasing")
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("--eval-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=8, help="waves of evaluations per cluster size")
    parser.add_argument("--scheduling-strategy", choices=["DEFAULT", "SPREAD"],
                        help="Ray scheduling strategy for the evaluation tasks (default: the engine's choice)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the bare-Ray run of the same load after each size")
    args = parser.parse_args()
    sizes = sorted(set(args.nodes))
    if args.scheduling_strategy:
        override_strategy(args.scheduling_strategy)
    # A private Ray temp dir: the Cluster head records its address in <tmp>/ray/ray_current_cluster, and any other
    # `ray.init()` without an address on this machine would otherwise join the simulated cluster.
    ray_tmp = Path(tempfile.mkdtemp(prefix="evolve-ray-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    try:
        run(args, sizes)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def run(args: argparse.Namespace, sizes: list[int]) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = 0
    results: list[Measurement] = []
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            problem_dir = make_problem(work / "problem", args.eval_seconds)
            strategy = args.scheduling_strategy or evolve.worker.stage_options(load_problem(problem_dir).stages[0]).get(
                "scheduling_strategy", "DEFAULT")
            print(f"{args.eval_seconds:g} s evaluations, {args.cpus_per_node} CPUs per node, {args.rounds} rounds per "
                  f"size, head with 0 CPUs, scheduling strategy {strategy}")
            print(f"{'nodes':>5}  {'slots':>5}  {'evals':>5}  {'wall s':>7}  {'evals/s':>8}  {'vs ideal':>8}  "
                  f"{'scaling':>8}  {'driver CPU ms/eval':>18}  {'bare Ray/s':>10}  {'vs bare':>7}  "
                  f"{'warm-up s':>9}  {'load avg':>8}")
            for size in sizes:
                while workers < size:
                    cluster.add_node(num_cpus=args.cpus_per_node)
                    workers += 1
                slots = size * args.cpus_per_node
                wait_for_cpus(slots)
                answered, warm_seconds = warm_up(load_problem(problem_dir), slots)
                m = measure(problem_dir, work / f"run-{size}", size, slots, args.rounds)
                bare = (bare_ray_rate(slots, args.rounds, args.eval_seconds, args.scheduling_strategy) if args.baseline
                        else float("nan"))
                results.append(m)
                base = results[0].rate / results[0].nodes
                scaling = m.rate / (m.nodes * base)
                print(f"{m.nodes:>5}  {m.slots:>5}  {m.evaluations:>5}  {m.wall:>7.2f}  {m.rate:>8.2f}  "
                      f"{m.vs_ideal(args.eval_seconds):>8.1%}  {scaling:>8.1%}  "
                      f"{m.driver_cpu / max(1, m.evaluations) * 1e3:>18.2f}  {bare:>10.2f}  {m.rate / bare:>7.1%}  "
                      f"{warm_seconds:>9.2f}  "
                      f"{os.getloadavg()[0]:>8.1f}"
                      + ("" if answered == size else f"   (warm-up reached {answered}/{size} nodes)"), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
