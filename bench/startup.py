"""Start-up cost of ``evolve run problems/circle_packing --iterations 1``, split by phase.

Three measurements, each in fresh processes, repeated (``--repeats``, median reported):

* the whole command's wall time (``python -m evolve.cli run ... --iterations 1 --quiet``, exit included);
* a bare ``ray.init(...)`` + ``ray.shutdown()`` with the CLI's own arguments in a fresh interpreter: Ray's own share;
* the phases, timed in a fresh interpreter that makes the same calls as ``evolve run`` (``evolve/cli.py``), in the
  same order: imports, problem load, sandbox check (which starts this process's fork server: numpy preload and the
  host probe), mutator, Ray start, cluster view and banner, the seed's evaluation as a Ray task (a Ray worker starts,
  and its own fork server), one iteration (mutation and evaluation on the now warm worker), Ray shutdown. The host
  probe alone is timed again in-process to show its part of the fork server's start.

    python bench/startup.py                 # 3 repeats
    python bench/startup.py --repeats 5 --problem problems/circle_packing
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PHASES = ("imports", "problem load", "sandbox check (fork server start)", "  of which the host probe", "mutator",
          "Ray start", "cluster view and banner", "seed evaluation (Ray worker start)", "first iteration",
          "Ray shutdown")


def phases_child(problem_dir: str) -> None:
    """Run in a fresh interpreter: time the calls ``evolve run`` makes, print them as JSON."""
    clock = time.perf_counter
    times: dict[str, float] = {}
    start = clock()
    import evolve.cli as cli
    from evolve.cluster import cluster_view, unmet_requirements
    from evolve.edits import apply_response
    from evolve.live import make_progress
    from evolve.loop import Evolution  # noqa: F401 - imported by `evolve run` (it imports Ray)
    from evolve.mutators import build_mutator
    from evolve.mutators.base import MutationRequest, ProgramView
    from evolve.sandbox import describe_isolation
    from evolve.settings import RunSettings
    from evolve.types import program_id_for
    from evolve.worker import RayStageExecutor, evaluation_seed

    times["imports"] = clock() - start

    start = clock()
    problem, _ = cli._load_with_notes(problem_dir)
    times["problem load"] = clock() - start

    start = clock()
    config = cli._sandbox_config(problem, None)
    times["sandbox check (fork server start)"] = clock() - start

    start = clock()
    settings = RunSettings.for_problem(problem, iterations=1)
    mutator = build_mutator(settings.mutator, problem, {})
    make_progress(True)
    times["mutator"] = clock() - start

    start = clock()
    ray = cli._init_ray(None, None, problem)
    times["Ray start"] = clock() - start

    start = clock()
    view = cluster_view()
    view.describe()
    unmet_requirements(problem, view)
    describe_isolation(config)
    times["cluster view and banner"] = clock() - start

    def evaluate(executor: RayStageExecutor, code: str) -> str:
        program_id = program_id_for(code)
        ref = executor.submit(0, code, program_id, evaluation_seed(settings.seed, program_id))
        while not executor.wait([ref], 1.0):
            pass
        outcome = executor.result(ref, 0)
        return outcome.status.value if outcome is not None else "lost"

    start = clock()
    executor = RayStageExecutor(problem, config)
    seed_code = problem.seed_code()
    seed_status = evaluate(executor, seed_code)
    times["seed evaluation (Ray worker start)"] = clock() - start

    start = clock()
    request = MutationRequest(parent=ProgramView(program_id=program_id_for(seed_code), code=seed_code), iteration=1,
                              seed=1, language=problem.language)
    child = apply_response(seed_code, mutator.propose(request).response).unwrap()
    child_status = evaluate(executor, child)
    times["first iteration"] = clock() - start

    start = clock()
    ray.shutdown()
    times["Ray shutdown"] = clock() - start

    from evolve.sandbox.probe import probe_host

    start = clock()
    probe_host()
    times["  of which the host probe"] = clock() - start
    print(json.dumps({"times": times, "seed": seed_status, "child": child_status}))


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return elapsed, result


BARE_RAY = ("import os, ray; ray.init(address='local', num_cpus=os.cpu_count() or 1, include_dashboard=False, "
            "logging_level='WARNING', log_to_driver=False); ray.shutdown()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", default=str(ROOT / "problems" / "circle_packing"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phases-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases_child:
        phases_child(args.problem)
        return
    whole, bare, child_wall = [], [], []
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
            seconds, _ = timed([sys.executable, "-m", "evolve.cli", "run", args.problem, "--iterations", "1",
                                "--run-dir", str(Path(tmp) / "run"), "--quiet"])
            whole.append(seconds)
        bare.append(timed([sys.executable, "-c", BARE_RAY])[0])
        seconds, result = timed([sys.executable, __file__, "--phases-child", "--problem", args.problem])
        child_wall.append(seconds)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        if report["seed"] != "ok":
            raise SystemExit(f"the seed's evaluation ended {report['seed']}")
        for name, value in report["times"].items():
            phases[name].append(value)

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"

    print(f"median of {args.repeats} run(s), seconds\n")
    print("| measurement | median | min | max |\n|---|---|---|---|")
    print(row("`evolve run ... --iterations 1` (whole command)", whole))
    print(row("bare `ray.init()` + `ray.shutdown()` (fresh interpreter)", bare))
    print(row("phases process (wall, interpreter start and exit included)", child_wall))
    for name in PHASES:
        print(row(name.replace("  ", "&nbsp;&nbsp;"), phases[name]))
    own = [w - b for w, b in zip(whole, bare, strict=True)]
    print(f"\nevolve's own share over bare Ray (whole command minus bare Ray): median {statistics.median(own):.2f} s")


if __name__ == "__main__":
    main()
