"""Start-up cost of ``evolve run``: cold (a private Ray started and stopped by the run) and warm (joining the local
Ray of ``evolve ray start``), next to bare Ray and to OpenEvolve 0.4 on the peer benchmark's folder.

Cold, 1 iteration (``--repeats`` rounds, median reported; each round runs every measurement once, interleaved, so
that a change in the machine's load hits them alike):

* the whole command: ``python -m evolve.cli run problems/circle_packing --iterations 1 --quiet --address local``;
* bare Ray: ``ray.init(...)`` + ``ray.shutdown()`` in a fresh interpreter with the arguments (and environment) of
  evolve's private instance: Ray's own share, what evolve cannot beat;
* the same with Ray's defaults (the dashboard on): what ``include_dashboard=False`` saves;
* the phases, timed one after the other in a fresh interpreter making the calls ``evolve run`` makes (in the real
  command the host probe and the loop's imports run beside Ray's start: see ``evolve.startup``).

``--peer``: 200 iterations (2,000 with ``--long``) of the peer benchmark's OpenEvolve-format folder with its instant
mock LLM (``mock_llm_server.py --vary``, a free port): OpenEvolve 0.4.0's ``openevolve-run`` and SkyDiscover
0.1.0's ``skydiscover-run`` (each when found), evolve cold (``--address local``) and evolve warm (after ``evolve ray
start``, with a state file of its own, stopped at the end whatever happens; ``--repeats`` warm runs): as a driver of
its own joining that Ray (``EVOLVE_NO_RUNNER=1``), and handed to the warm runner ``evolve ray start`` leaves running
(``evolve.runner``), what ``evolve run`` does.

    python bench/startup.py                        # cold start-up, 3 rounds
    python bench/startup.py --peer --long          # plus the side-by-side runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

KEEP_WARM_SECONDS = 5.0  # evolve.runner_process.KEEP_WARM_EVERY
LAUNCH = [sys.executable, "-c", "import sys; from evolve.launch import entry; sys.argv[0] = 'evolve'; entry()"]  # `evolve`
PHASES = ("imports", "problem load", "sandbox host probe (driver's fork server)", "plan and mutator", "Ray start",
          "worker warm-up submitted", "seed evaluation (first worker busy)", "first iteration", "Ray shutdown")


def phases_child(problem_dir: str) -> None:
    """Run in a fresh interpreter: time the calls ``evolve run`` makes, one after the other; print them as JSON."""
    clock = time.perf_counter
    times: dict[str, float] = {}
    start = clock()
    import evolve.cli as cli
    from evolve.cli_run import sandbox_config
    from evolve.edits import apply_response
    from evolve.loop import Evolution  # noqa: F401 - imported by `evolve run` (Ray, PyArrow)
    from evolve.mutators import build_mutator
    from evolve.mutators.base import MutationRequest, ProgramView
    from evolve.ray_local import RayTarget, TargetKind
    from evolve.run_setup import plan_run
    from evolve.startup import connect, warm_workers
    from evolve.types import program_id_for
    from evolve.worker import RayStageExecutor, evaluation_seed

    times["imports"] = clock() - start

    start = clock()
    problem, _ = cli.load_with_notes(problem_dir)
    times["problem load"] = clock() - start

    start = clock()
    config = sandbox_config(problem, None)
    times["sandbox host probe (driver's fork server)"] = clock() - start

    start = clock()
    with tempfile.TemporaryDirectory(prefix="startup-plan-") as tmp:
        plan = plan_run(problem, resume=False, run_dir=Path(tmp) / "run", archive_root=tmp, given={"iterations": 1})
    mutator = build_mutator(plan.settings.mutator, problem, {})
    times["plan and mutator"] = clock() - start

    start = clock()
    connect(RayTarget(TargetKind.PRIVATE), problem)
    times["Ray start"] = clock() - start

    start = clock()
    warm_workers(problem, config)
    times["worker warm-up submitted"] = clock() - start

    def evaluate(executor: RayStageExecutor, code: str) -> str:
        program_id = program_id_for(code)
        ref = executor.submit(0, code, program_id, evaluation_seed(0, program_id))
        while not executor.wait([ref], 1.0):
            pass
        outcome = executor.result(ref, 0)
        return outcome.status.value if outcome is not None else "lost"

    start = clock()
    executor = RayStageExecutor(problem, config)
    seed_code = problem.seed_code()
    seed_status = evaluate(executor, seed_code)
    times["seed evaluation (first worker busy)"] = clock() - start

    start = clock()
    request = MutationRequest(parent=ProgramView(program_id=program_id_for(seed_code), code=seed_code), iteration=1,
                              seed=1, language=problem.language)
    child = apply_response(seed_code, mutator.propose(request).response).unwrap()
    evaluate(executor, child)
    times["first iteration"] = clock() - start

    import ray

    start = clock()
    ray.shutdown()
    times["Ray shutdown"] = clock() - start
    print(json.dumps({"times": times, "seed": seed_status}))


def quiet_env(state_file: Path | None = None) -> dict[str, str]:
    """A user's environment without API keys or user config; no recorded local Ray unless ``state_file``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != "RAY_AUTH_MODE"}
    env.update({"PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": "/nonexistent",
                "EVOLVE_RAY_STATE": str(state_file or Path(tempfile.gettempdir()) / "evolve-bench-no-ray.json")})
    return env


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env or quiet_env())
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return elapsed, result


# Ray's own share: exactly the arguments and environment of evolve's private instance (evolve.ray_local).
BARE_RAY = ("import os; os.environ['RAY_AUTH_MODE'] = 'token'; import ray; "
            "ray.init(address='local', num_cpus=os.cpu_count() or 1, include_dashboard=False, "
            "logging_level='WARNING', log_to_driver=False); ray.shutdown()")
RAY_DEFAULTS = ("import os; os.environ['RAY_AUTH_MODE'] = 'token'; import ray; "
                "ray.init(address='local', num_cpus=os.cpu_count() or 1, logging_level='WARNING', "
                "log_to_driver=False); ray.shutdown()")


def stat(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def cold(problem: str, repeats: int) -> None:
    whole, bare, defaults = [], [], []
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
            seconds, _ = timed([sys.executable, "-m", "evolve.cli", "run", problem, "--iterations", "1",
                                "--run-dir", str(Path(tmp) / "run"), "--quiet", "--address", "local"])
            whole.append(seconds)
        bare.append(timed([sys.executable, "-c", BARE_RAY])[0])
        defaults.append(timed([sys.executable, "-c", RAY_DEFAULTS])[0])
        _, result = timed([sys.executable, __file__, "--phases-child", "--problem", problem])
        report = json.loads(result.stdout.strip().splitlines()[-1])
        if report["seed"] != "ok":
            raise SystemExit(f"the seed's evaluation ended {report['seed']}")
        for name, value in report["times"].items():
            phases[name].append(value)
    own = [w - b for w, b in zip(whole, bare, strict=True)]
    print(f"cold start, {repeats} round(s), seconds: median (min–max)\n")
    print("| measurement | seconds |\n|---|---:|")
    print(f"| `evolve run ... --iterations 1` (whole command, private Ray) | {stat(whole)} |")
    print(f"| bare `ray.init()` + `ray.shutdown()`, evolve's arguments | {stat(bare)} |")
    print(f"| **evolve's own share** (whole command minus bare Ray, per round) | **{stat(own)}** |")
    print(f"| bare Ray with its defaults (dashboard on) | {stat(defaults)} |")
    print("| phases, one after the other (in the command, the probe and the imports overlap Ray's start): | |")
    for name in PHASES:
        print(f"| &nbsp;&nbsp;{name} | {stat(phases[name])} |")


# SkyDiscover 0.1.0 rejects the toy's OpenEvolve config (PromptConfig has no num_top_programs): the same model,
# budget and evaluator settings in its own format, topk search. Its loop calls the LLM one call at a time and runs
# the evaluator in its own process, in a thread (no sandbox, no hard timeout).
SKY_CONFIG = """\
max_iterations: {iterations}
checkpoint_interval: 50
random_seed: 42
diff_based_generation: true
max_solution_length: 10000
llm:
  api_base: "{url}"
  api_key: "bench"
  models:
    - name: "mock-model"
      weight: 1.0
      api_base: "{url}"
  temperature: 0.7
  max_tokens: 1024
  timeout: 30
  retries: 0
prompt:
  system_message: "You are a benchmark stub."
search:
  type: topk
evaluator:
  timeout: 30
  max_retries: 0
  cascade_evaluation: false
  parallel_evaluations: 4
"""


def run_skydiscover(binary: Path, mock: Any, iterations: int, work: Path) -> float:
    """Wall seconds of ``skydiscover-run`` on the toy; refused unless it asked the mock once per iteration (with
    an unreachable endpoint it still exits 0, quickly)."""
    from llm_throughput import TOY

    work.mkdir(parents=True, exist_ok=True)
    config = work / f"sky-{iterations}.yaml"
    config.write_text(SKY_CONFIG.format(iterations=iterations, url=mock.url))
    before = mock.requests()
    seconds, result = timed([str(binary), str(TOY / "initial_program.py"), str(TOY / "evaluator.py"), "--config",
                             str(config), "--search", "topk", "--api-base", mock.url, "--iterations",
                             str(iterations), "--output", str(work / f"sky-out-{iterations}")],
                            quiet_env() | {"OPENAI_API_KEY": "bench"})
    calls = mock.requests() - before
    if result.returncode != 0 or calls < iterations:
        raise SystemExit(f"skydiscover-run did not run {iterations} iterations against the mock ({calls} calls, "
                         f"exit {result.returncode}):\n{result.stderr[-2000:]}")
    return seconds


def peer(repeats: int, long: bool, openevolve: Path | None, skydiscover: Path | None = None) -> None:
    from llm_throughput import TOY, Mock, run_openevolve

    rows: list[tuple[str, str]] = []
    mock = Mock(0.0)
    work = Path(tempfile.mkdtemp(prefix="startup-peer-"))
    state = work / "local-ray.json"
    try:
        def evolve_run(iterations: int, address: str | None, tag: str, runner: bool = True) -> float:
            cmd = [*LAUNCH, "run", str(TOY), "--mutator", "llm", "--api-base", mock.url,
                   "--api-key", "bench", "--model", "mock-model", "--iterations", str(iterations), "--run-dir",
                   str(work / f"evolve-{tag}"), "--quiet"] + (["--address", address] if address else [])
            env = quiet_env(state) | ({} if runner else {"EVOLVE_NO_RUNNER": "1"})
            seconds, result = timed(cmd, env)
            if f"({iterations}/{iterations} iterations)" not in result.stdout:
                raise SystemExit(f"evolve did not finish {iterations} iterations:\n{result.stdout}")
            if "did not take this run" in result.stderr:
                raise SystemExit(f"the warm runner refused the run:\n{result.stderr}")
            return seconds

        sizes = [200] + ([2000] if long else [])
        for iterations in sizes:
            if openevolve is not None:
                row = run_openevolve(openevolve, mock, 0.0, 4, iterations, work)
                rows.append((f"OpenEvolve 0.4.0, {iterations} iterations", f"{row.wall:.2f}"))
            if skydiscover is not None:
                sky = [run_skydiscover(skydiscover, mock, iterations, work / f"sky-{i}")
                       for i in range(repeats if iterations == 200 else 1)]
                rows.append((f"SkyDiscover 0.1.0 (topk), {iterations} iterations", stat(sky)))
            cold_runs = [evolve_run(iterations, "local", f"cold-{iterations}-{i}")
                         for i in range(repeats if iterations == 200 else 1)]
            rows.append((f"evolve cold (private Ray started and stopped), {iterations} iterations", stat(cold_runs)))
        ray_dir = tempfile.mkdtemp(prefix="evb-", dir="/tmp")  # its own: never a running `evolve ray start`'s
        seconds, result = timed([sys.executable, "-m", "evolve.cli", "ray", "start", "--temp-dir", ray_dir],
                                quiet_env(state))
        if result.returncode != 0 or "warm runner: pid" not in result.stdout:
            raise SystemExit(f"`evolve ray start` failed:\n{result.stdout}{result.stderr}")
        rows.append(("`evolve ray start` (once: Ray and its warm runner)", f"{seconds:.2f}"))
        try:
            for iterations in sizes:
                count = repeats if iterations == 200 else 1
                # The runner's first: a job of its own ends the runner's idle workers (it warms them again after
                # a few idle seconds), which runs back to back would otherwise measure.
                warm = [evolve_run(iterations, None, f"warm-{iterations}-{i}") for i in range(count)]
                rows.append((f"**evolve warm (`evolve ray start`'s runner), {iterations} iterations**",
                             f"**{stat(warm)}**"))
                plain = [evolve_run(iterations, None, f"joined-{iterations}-{i}", runner=False) for i in range(count)]
                rows.append((f"evolve joining `evolve ray start`, its own driver (`EVOLVE_NO_RUNNER=1`), {iterations} "
                             "iterations", stat(plain)))
                time.sleep(2 * KEEP_WARM_SECONDS)  # the runner's workers warm again, as between a user's runs
        finally:
            subprocess.run([sys.executable, "-m", "evolve.cli", "ray", "stop"], env=quiet_env(state), cwd=ROOT,
                           capture_output=True, text=True)
    finally:
        mock.close()
    print(f"\npeer benchmark (openevolve_toy, instant mock LLM, sandbox on), wall seconds of the whole command; "
          f"evolve: median (min–max) of {repeats} for 200 iterations\n")
    print("| run | seconds |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", default=str(ROOT / "problems" / "circle_packing"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer", action="store_true", help="also the side-by-side runs of the peer benchmark")
    parser.add_argument("--long", action="store_true", help="with --peer: 2,000 iterations too")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold 1-iteration measurements")
    parser.add_argument("--openevolve", type=Path, default=next(
        (p for p in (Path("/work/oe-venv/bin/openevolve-run"), Path("/tmp/oe-venv/bin/openevolve-run")) if p.exists()),
        None))
    parser.add_argument("--skydiscover", type=Path, default=next(
        (p for p in (Path("/work/sky-venv/bin/skydiscover-run"), Path("/tmp/sky-venv/bin/skydiscover-run"))
         if p.exists()), None), help="SkyDiscover's skydiscover-run (pip install skydiscover, in a venv of its own)")
    parser.add_argument("--phases-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases_child:
        phases_child(args.problem)
        return
    if not args.no_cold:
        cold(args.problem, args.repeats)
    if args.peer:
        peer(args.repeats, args.long, args.openevolve, args.skydiscover)


if __name__ == "__main__":
    main()
