"""Runs evolve on a simulated multi-node Ray cluster and prints what happened, as JSON, for tests/test_cluster.py.

    python tests/cluster_scenarios/heterogeneous.py WORKDIR [placement] [node_loss]

One ``ray.cluster_utils.Cluster`` on this machine: a head that declares no CPU (the driver's node does no evaluation
work, as in cluster.yaml), a CPU worker node and a worker node declaring one ``GPU``. The problem has a CPU stage
``check`` (calls the candidate in the sandbox, then sleeps) and a ``bench`` stage with ``gpus = 1`` whose evaluator is a
CPU stand-in that sleeps. Scenarios run one after the other on the same cluster (a Cluster start costs seconds):

* ``placement``: a plain run.
* ``node_loss``: the CPU worker node dies mid-run while it is running evaluations: its Ray services and the worker
  processes running them are killed with SIGKILL, as when a machine crashes.

The evaluator (trusted side, inside the Ray task) leaves a marker file per evaluation it starts, named after the node
it runs on, and deletes it when it returns: a marker left behind is an evaluation that died with its node. This is a
separate witness of where work ran, next to the ``node`` each ``StageOutcome`` records. The result is one stdout
line ``CLUSTER-RESULT <json>`` (Ray prints its own lines on stdout too).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray
from ray.cluster_utils import Cluster

from evolve.archive import SEGMENTS_DIR, read_programs
from evolve.loop import Evolution
from evolve.mutators.scripted import ScriptedMutator
from evolve.problem import load_problem
from evolve.progress import ProgressSnapshot
from evolve.settings import RunSettings

RESULT_PREFIX = "CLUSTER-RESULT "

SEED = """\
# EVOLVE-BLOCK-START
A = 1.0
B = -2.0
STEPS = 3
# EVOLVE-BLOCK-END


def solve():
    return [A, B, STEPS]
"""

# {marks} is replaced by the marker folder. Markers are the trusted side's own record; the candidate never sees them.
EVALUATOR = """\
import json
import os
import time
from pathlib import Path

import ray

MARKS = Path({marks!r})
CHECK_SECONDS = 0.4
BENCH_SECONDS = 0.1


class _Running:
    def __init__(self, stage, candidate):
        node = ray.get_runtime_context().get_node_id()
        self.path = MARKS / f"{{stage}}.{{candidate.program_id}}.{{node}}.{{os.getpid()}}.{{time.monotonic_ns()}}"

    def __enter__(self):
        self.path.write_text("")
        return self

    def __exit__(self, *exc):
        self.path.unlink()


def check(candidate):
    with _Running("check", candidate):
        a, b, steps = candidate.call("solve")
        time.sleep(CHECK_SECONDS)
    return {{"a": float(a), "loss": (a - 3.0) ** 2 + (b - 0.5) ** 2 + 0.01 * abs(steps - 7)}}


def bench(candidate):
    # Stand-in for a GPU benchmark: Ray must have granted this task a GPU of the node it runs on.
    with _Running("bench", candidate):
        time.sleep(BENCH_SECONDS)
        candidate.artifacts["gpu_ids"] = json.dumps([str(g) for g in ray.get_gpu_ids()])
        candidate.artifacts["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    return {{"bench_seconds": BENCH_SECONDS}}
"""

PROBLEM_TOML = """\
name = "hetero"
description = "Two-stage problem: a CPU check, then a GPU benchmark."
seed = "seed.py"
evaluator = "evaluator.py"
[score]
metric = "loss"
direction = "minimize"
[[features]]
name = "a"
min = -5
max = 5
bins = 5
[[stages]]
name = "check"
function = "check"
timeout = 30
cpus = 1
[[stages]]
name = "bench"
function = "bench"
timeout = 30
cpus = 1
gpus = 1
"""

# Node death is noticed by the head's health checks; Ray's defaults (several seconds) would dominate the test.
HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}
CPU_NODE_CPUS = 2
GPU_NODE_CPUS = 2


def write_problem(root: Path, marks: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    marks.mkdir(parents=True, exist_ok=True)
    (root / "seed.py").write_text(SEED)
    (root / "evaluator.py").write_text(EVALUATOR.format(marks=str(marks)))
    (root / "problem.toml").write_text(PROBLEM_TOML)
    return root


class NodeKiller:
    """A Progress that kills ``node`` once ``after`` iterations are done and the node is running an evaluation.

    It runs in the driver's loop thread, so the kill happens between two loop steps, with evaluations in flight.
    """

    def __init__(self, cluster: Cluster, node: Any, after: int, marks: Path):
        self.cluster, self.node, self.after, self.marks = cluster, node, after, marks
        self.killed_at_done: int | None = None
        self.running_at_kill: list[str] = []
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def update(self, snapshot: ProgressSnapshot, force: bool = False) -> None:
        if self.killed_at_done is not None or snapshot.done < self.after:
            return
        running = [p.name for p in self.marks.iterdir() if f".{self.node.node_id}." in p.name]
        if not running:
            return
        # A crashed machine takes its worker processes down with it at once; Cluster.remove_node kills the node's
        # Ray services, and its workers would otherwise notice and exit only later (possibly finishing a task).
        for name in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(name.split(".")[3]), signal.SIGKILL)
        self.cluster.remove_node(self.node, allow_graceful=False)
        self.killed_at_done = snapshot.done
        self.running_at_kill = running

    def close(self) -> None:
        pass


def raw_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every row written to the archive's segments, without the readers' deduplication."""
    rows: list[dict[str, Any]] = []
    for path in sorted((run_dir / SEGMENTS_DIR).glob("*.parquet")):
        table = pq.read_table(path, columns=["program_id", "iteration", "status", "stages", "artifacts"])
        rows.extend(table.to_pylist())
    return rows


def summarize(run_dir: Path, evolution: Evolution) -> dict[str, Any]:
    rows = raw_rows(run_dir)
    stats = json.loads((run_dir / "stats.json").read_text())
    return {
        "done": evolution.done,
        "budget": evolution.settings.iterations,
        "stop_reason": evolution.stop_reason.value if evolution.stop_reason else None,
        "duplicates": stats["duplicates_this_session"],
        "journal_files": sorted(p.name for p in (run_dir / "journal").glob("*.jsonl")),
        "deduplicated_rows": read_programs(run_dir).table.num_rows,
        "rows": [
            {
                "program_id": r["program_id"],
                "iteration": r["iteration"],
                "status": r["status"],
                "stages": [{"stage": s["stage"], "status": s["status"], "node": s.get("node", "")}
                           for s in json.loads(r["stages"])],
                "artifacts": json.loads(r["artifacts"]),
            }
            for r in rows
        ],
    }


def run(problem_dir: Path, run_dir: Path, iterations: int, progress: Any = None) -> Evolution:
    settings = RunSettings(iterations=iterations, concurrency=8, islands=1, seed=11, max_system_retries=3,
                           flush_seconds=60.0)
    evolution = Evolution(load_problem(problem_dir), settings, ScriptedMutator(), run_dir, run_dir.name,
                          progress=progress)
    evolution.run()
    return evolution


def leftover_marks(marks: Path) -> list[dict[str, str]]:
    out = []
    for path in sorted(marks.iterdir()):
        stage, program_id, node, _pid, _ns = path.name.split(".")
        out.append({"stage": stage, "program_id": program_id, "node": node})
    return out


def private_ray_tmpdir() -> Path:
    """Keep this cluster's sessions and its ``ray_current_cluster`` file out of /tmp/ray.

    A ``Cluster`` head records its address there, and any other process on the machine calling ``ray.init()``
    without an address (a parallel test session, for one) would join this simulated cluster instead of starting
    its own. A short path: Ray's Unix sockets live under it.
    """
    path = Path(tempfile.mkdtemp(prefix="evolve-ray-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(path)
    return path


def main(argv: list[str]) -> None:
    ray_tmp = private_ray_tmpdir()
    try:
        run_scenarios(argv)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def run_scenarios(argv: list[str]) -> None:
    work = Path(argv[0])
    scenarios = argv[1:] or ["placement", "node_loss"]
    marks = work / "marks"
    problem_dir = write_problem(work / "problem", marks)
    started = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": HEALTH_CHECKS})
    cpu_node = cluster.add_node(num_cpus=CPU_NODE_CPUS)
    gpu_node = cluster.add_node(num_cpus=GPU_NODE_CPUS, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    cluster.wait_for_nodes()
    result: dict[str, Any] = {
        "nodes": {"head": cluster.head_node.node_id, "cpu": cpu_node.node_id, "gpu": gpu_node.node_id},
        "startup_seconds": time.monotonic() - started,
    }
    try:
        if "placement" in scenarios:
            begin = time.monotonic()
            evolution = run(problem_dir, work / "placement", iterations=12)
            result["placement"] = {**summarize(work / "placement", evolution), "seconds": time.monotonic() - begin,
                                   "leftover_marks": leftover_marks(marks)}
        if "node_loss" in scenarios:
            begin = time.monotonic()
            killer = NodeKiller(cluster, cpu_node, after=3, marks=marks)
            evolution = run(problem_dir, work / "node_loss", iterations=16, progress=killer)
            alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
            result["node_loss"] = {
                **summarize(work / "node_loss", evolution),
                "seconds": time.monotonic() - begin,
                "killed_at_done": killer.killed_at_done,
                "running_at_kill": killer.running_at_kill,
                "leftover_marks": leftover_marks(marks),
                "messages": killer.messages,
                "alive_after": alive,
            }
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
