"""CPU and wall time of whole sandboxed evaluations: ``run_stage`` of a problem's first stage, N times in a row.

What an ``evolve run`` worker pays per evaluated child besides Ray: the trusted side (this process: the evaluator's
stage function, scratch dir, leases, cgroup, spawn request, reply checks) and the fork server's tree (the server,
the namespace inits and the candidates it reaped). Both are read from the kernel's counters; page faults of the tree
are reported too (every page a forked candidate writes is copied for it). On a shared machine compare interleaved
runs, and prefer the CPU figures to the wall times.

    python bench/stage_overhead.py                                   # the peer benchmark's toy problem, 300 runs
    python bench/stage_overhead.py problems/circle_packing -n 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

from evolve.cli_common import load_with_notes
from evolve.cli_run import sandbox_config
from evolve.evaluation import run_stage
from evolve.sandbox import sandbox_for_problem
from evolve.types import program_id_for

TOY = "/work/shared/peer-bench/openevolve_toy"


def server_tree() -> tuple[float, int]:
    """CPU seconds and minor page faults of this process's fork servers and everything they reaped."""
    from evolve.sandbox.forkserver import _servers

    cpu, faults = 0.0, 0
    for server in list(_servers.values()):
        fields = Path(f"/proc/{server.hello.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        faults += int(fields[7]) + int(fields[8])  # minflt + cminflt
    return cpu, faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problem", nargs="?", default=TOY)
    parser.add_argument("-n", type=int, default=300, help="evaluations measured (after 20 warm-up ones)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    problem, _ = load_with_notes(args.problem)
    config = sandbox_config(problem, None)
    stage = problem.stages[0]
    code = problem.seed_code()

    def once(i: int) -> None:
        variant = f"{code}\n# variant {i}\n"
        sandbox = sandbox_for_problem(problem, config, stage)
        outcome = run_stage(problem, stage.name, variant, program_id_for(variant), 5, sandbox=sandbox)
        if not outcome.passed:
            raise SystemExit(f"the seed program failed: {outcome.status.value}: {outcome.message}")

    for i in range(20):
        once(i)
    walls = []
    tree_cpu, tree_faults = server_tree()
    own_cpu, own_faults = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(args.n):
        start = time.perf_counter()
        once(i)
        walls.append(time.perf_counter() - start)
    tree_cpu2, tree_faults2 = server_tree()
    figures = {
        "problem": str(args.problem), "evaluations": args.n, "load": os.getloadavg()[0],
        "wall_ms_median": statistics.median(walls) * 1000, "wall_ms_mean": statistics.mean(walls) * 1000,
        "trusted_cpu_ms": (time.process_time() - own_cpu) / args.n * 1000,
        "trusted_faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - own_faults) / args.n,
        "server_tree_cpu_ms": (tree_cpu2 - tree_cpu) / args.n * 1000,
        "server_tree_faults": (tree_faults2 - tree_faults) / args.n,
    }
    print(f"{args.n} evaluations of {problem.name}, load {figures['load']:.1f}; per evaluation:")
    print(f"  wall {figures['wall_ms_median']:.1f} ms median ({figures['wall_ms_mean']:.1f} mean)")
    print(f"  trusted side CPU {figures['trusted_cpu_ms']:.2f} ms ({figures['trusted_faults']:.0f} page faults)")
    print(f"  fork server tree CPU {figures['server_tree_cpu_ms']:.2f} ms ({figures['server_tree_faults']:.0f} page "
          "faults)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
