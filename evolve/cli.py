"""The ``evolve`` command line: ``run`` (in ``evolve.cli_run``), ``eval``, and the command groups of the other
``evolve.cli_*`` modules. Importing it is cheap: each command imports what it needs when it runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from evolve.cli_common import EvolveError, load, load_with_notes
from evolve.cli_run import EXIT_ARCHIVE_IO, EXIT_INTERRUPTED, EXIT_MUTATOR_STOPPED, run, sandbox_config

__all__ = ["EXIT_ARCHIVE_IO", "EXIT_INTERRUPTED", "EXIT_MUTATOR_STOPPED", "EvolveError", "load", "load_with_notes",
           "entry", "main", "sandbox_config"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evolve")
def main() -> None:
    """evolve: evolve programs with mutators, sandboxed evaluators and a Parquet MAP-Elites archive on Ray."""


@main.command("eval")
@click.argument("problem_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("program", type=click.Path(exists=True, dir_okay=False))
@click.option("--stages", help="Comma-separated stage names to run (default: all, in order).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Run seed the trusted side's random inputs derive from (as in `evolve run --seed`).")
@click.option("--json", "as_json", is_flag=True, help="Print every stage's outcome (and problem.toml's problems) "
              "as JSON.")
def eval_command(problem_dir: str, program: str, stages: str | None, seed: int, as_json: bool) -> None:
    """Evaluate PROGRAM against the problem's stages here, without Ray, and print every stage's outcome."""
    from evolve.evaluation import run_stage
    from evolve.types import StageOutcome, Status, program_id_for
    from evolve.worker import evaluation_seed

    problem = load(problem_dir)
    wanted = [s.strip() for s in stages.split(",")] if stages else [s.name for s in problem.stages]
    unknown = [name for name in wanted if name not in {s.name for s in problem.stages}]
    if unknown:
        raise EvolveError(f"unknown stage(s) {', '.join(unknown)}; the problem has "
                          f"{', '.join(s.name for s in problem.stages)}")
    code = Path(program).read_text()
    program_id = program_id_for(code)
    gpu = _gpu_available()
    results: list[dict[str, Any]] = []
    failed = False
    for stage in problem.stages:
        if stage.name not in wanted:
            continue
        if stage.gpus and not gpu:
            results.append({"stage": stage.name, "status": "skipped",
                            "message": f"needs {stage.gpus:g} GPU(s); no CUDA device found here (CuPy sees none)"})
            continue
        outcome = run_stage(problem, stage.name, code, program_id, evaluation_seed(seed, program_id))
        results.append(outcome.to_dict())
        if outcome.status is not Status.OK:
            failed = True
            break
    problems: list[str] = []
    if not failed and len(results) == len(problem.stages) and all(r["status"] == "ok" for r in results):
        # Every stage ran and passed: the metrics problem.toml names must be among what the evaluator returned.
        from evolve.problem_checks import missing_metrics

        returned = {k for r in results for k in r.get("metrics", {})}
        problems = [m.describe() for m in missing_metrics(problem, returned)]
        failed = bool(problems)
    verdict = None  # every visible stage passed: the held-out stages, the re-evaluations and the standing
    if not failed and not stages and len(results) == len(problem.stages) and all(r["status"] == "ok" for r in results):
        from evolve.oversight.verdict import eval_verdict

        verdict = eval_verdict(problem, code, program_id, [StageOutcome.from_dict(r) for r in results], seed, gpu)
    if as_json:
        click.echo(json.dumps({"program_id": program_id, "stages": results, "problems": problems,
                               "verdict": verdict.to_dict() if verdict else None}, indent=2))
    else:
        for item in results:
            click.echo(f"[{item['stage']}] {item['status']}  {item.get('message', '')}".rstrip())
            for key, value in sorted(item.get("metrics", {}).items()):
                click.echo(f"    {key} = {value:.6g}")
            for name, text in item.get("artifacts", {}).items():
                click.echo(f"    --- {name} ---")
                # The last 40 lines, each cut at 240 characters (a packing's coordinates are one long line).
                click.echo("\n".join("    " + (line if len(line) <= 240 else line[:240] + " ...")
                                      for line in text.splitlines()[-40:]))
        for line in problems:
            click.echo(f"problem.toml: {line}")
        for line in verdict.lines() if verdict else []:
            click.echo(line)
    if failed:
        sys.exit(1)


def _gpu_available() -> bool:
    try:
        import cupy  # type: ignore[import-not-found]

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # noqa: BLE001 - no CuPy, driver or device
        return False


def _register_commands() -> None:
    from evolve.cli_archive import archive
    from evolve.cli_extra import init, problems
    from evolve.cli_failures import failures
    from evolve.cli_oversight import COMMANDS as OVERSIGHT_COMMANDS
    from evolve.cli_ray import ray_group
    from evolve.cli_sandbox import sandbox
    from evolve.cli_steer import steer
    from evolve.cli_strategies import strategies
    from evolve.cli_ui import ui

    archive.add_command(failures)
    archive.add_command(strategies)
    for command in OVERSIGHT_COMMANDS:  # approve, reject, release, audit
        archive.add_command(command)
    for command in (archive, init, problems, ray_group, run, sandbox, steer, ui):
        main.add_command(command)


_register_commands()


def entry() -> None:
    """The ``evolve`` command (``main`` is the click group, for in-process callers and tests).

    Once the command is done, its threads joined and its exit hooks run (as at any exit), the process ends without
    finalizing the interpreter: tearing down Ray's native libraries and every loaded module took 0.4 s of each
    ``evolve run`` (measured), after everything was written and said."""
    try:
        main()  # standalone: it always ends in SystemExit
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if not isinstance(code, int | None):
        raise SystemExit(code)  # a message to print: Python's own exit says it
    _exit_now(code or 0)


def _exit_now(code: int) -> None:
    import atexit
    import contextlib
    import os
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    run_hooks = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_hooks is None:  # another Python: the ordinary exit
        sys.exit(code)
    shutdown()  # what an ordinary exit does first: non-daemon threads finish (a thread pool's hook stops them)
    run_hooks()  # then the exit hooks (logging's flush, Ray's, the fork servers' shutdown)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone (`| head`), or a stream already closed
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
