"""The ``evolve`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from evolve.problem import Problem, ProblemError


class EvolveError(click.ClickException):
    """One clear message and a non-zero exit."""


def _load(problem_dir: str) -> Problem:
    return _load_with_notes(problem_dir)[0]


def _load_with_notes(problem_dir: str) -> tuple[Problem, list[str]]:
    """A ``problem.toml`` folder, or an OpenEvolve-format one (with notes on what was mapped or ignored)."""
    from evolve.openevolve import load_any_problem

    try:
        return load_any_problem(problem_dir)
    except ProblemError as exc:
        raise EvolveError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evolve")
def main() -> None:
    """evolve: evolve programs with mutators, sandboxed evaluators and a Parquet MAP-Elites archive on Ray."""


def _init_ray(address: str | None, num_cpus: int | None, problem: Problem) -> Any:
    import ray

    from evolve.cluster import ShippingError, problem_runtime_env

    if ray.is_initialized():
        return ray  # called from a process that already runs Ray (a notebook, a test): use it
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    if address:
        kwargs["address"] = address
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
            # Under `ray job submit` the job's own runtime_env would clash with ours; the problem folder must win.
            os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
        # On a cluster the problem folder travels with the job; the engine is installed on the nodes.
        try:
            kwargs["runtime_env"] = problem_runtime_env(problem)
        except ShippingError as exc:
            raise EvolveError(str(exc)) from None
    else:
        # A fresh local instance, even when a `ray start` cluster runs here: joining one is what --address is for.
        kwargs["address"] = "local"
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray's errors are long; say what failed and where
        raise EvolveError(f"could not start or join Ray ({address or 'local'}): {exc}") from None
    return ray


# Exit codes besides click's (1: an error before or instead of running, 2: bad usage).
EXIT_MUTATOR_STOPPED = 3  # an LLM budget reached or the endpoint down past its patience
EXIT_ARCHIVE_IO = 4  # the archive could not be written (a full disk, a failing device): stopped cleanly
EXIT_INTERRUPTED = 130  # the shell's convention for a run ended by Ctrl-C

_SETTING_FLAGS = ("iterations", "concurrency", "islands", "migration_interval", "mutator", "seed", "time_limit",
                  "target_score", "batch_size")
_LLM_FLAGS = ("models", "api_base", "api_key", "max_llm_calls", "max_tokens", "max_cost")


@main.command()
@click.argument("problem_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--iterations", type=click.IntRange(min=1),
              help="Children to produce after the seed. On --resume: the run's new total budget, not a number more.")
@click.option("--more", type=click.IntRange(min=1), help="On --resume: run this many iterations more than are done.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Programs in flight at once (default: 2 x CPUs).")
@click.option("--islands", type=click.IntRange(min=1))
@click.option("--migration-interval", type=click.IntRange(min=1))
@click.option("--mutator", type=click.Choice(["tune", "scripted", "llm"]))
@click.option("--seed", type=int, default=None, help="Seed of the run's random choices (default 0).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), help="Seconds before stopping.")
@click.option("--target-score", type=float, help="Stop when a program reaches this score.")
@click.option("--deterministic", is_flag=True, help="Reproducible archive at any concurrency (batched).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size in --deterministic mode.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default archive/<problem>/<run-id>).")
@click.option("--archive-root", type=click.Path(file_okay=False), default="archive", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir (default: the latest run) with the "
              "settings it stored; flags given now override them.")
@click.option("--accept-damage", is_flag=True, help="On --resume: continue over damaged files (moved to "
              "RUN/damaged/, their iterations recorded as lost) instead of refusing.")
@click.option("--address", help="Ray cluster address (e.g. 'auto' on a cluster head); default: start Ray locally.")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs for a local Ray instance.")
@click.option("--model", "models", multiple=True, help="LLM model name (repeatable, for an ensemble).")
@click.option("--api-base", help="OpenAI-compatible endpoint URL (default $OPENAI_BASE_URL).")
@click.option("--api-key", help="API key (default $OPENAI_API_KEY). Never written to the run folder.")
@click.option("--max-llm-calls", type=click.IntRange(min=1))
@click.option("--max-tokens", type=click.IntRange(min=1))
@click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), help="USD.")
@click.option("--sandbox-require", help="Refuse to start unless candidates get these sandbox layers "
              "(e.g. 'full', or 'pidns+netns+landlock'); overrides [sandbox] require.")
@click.option("--quiet", is_flag=True, help="Only the final summary.")
def run(problem_dir: str, **opts: Any) -> None:
    """Evolve the problem in PROBLEM_DIR."""
    from evolve.archive import ArchiveLockedError
    from evolve.cluster import cluster_view, unmet_requirements
    from evolve.live import make_progress
    from evolve.loop import Evolution, RunRefused, StopReason
    from evolve.mutators import build_mutator
    from evolve.run_setup import plan_run
    from evolve.sandbox import describe_isolation

    problem, notes = _load_with_notes(problem_dir)
    for note in notes:
        click.echo(f"note: {note}")
    if (opts["accept_damage"] or opts["more"]) and not opts["resume"]:
        raise click.UsageError("--accept-damage and --more continue a run: use them with --resume")
    if opts["more"] and opts["iterations"]:
        raise click.UsageError("--iterations (the total budget) and --more (iterations more) exclude each other")
    given = {k: opts[k] for k in _SETTING_FLAGS}
    if opts["deterministic"]:
        given["deterministic"] = True
    try:
        plan = plan_run(problem, resume=opts["resume"], run_dir=opts["run_dir"], archive_root=opts["archive_root"],
                        given=given, sandbox_require=opts["sandbox_require"],
                        llm_options={k: opts[k] for k in _LLM_FLAGS})
    except RunRefused as exc:
        raise EvolveError(str(exc)) from None
    for note in plan.notes:
        click.echo(f"note: {note}")
    run_dir, settings = plan.run_dir, plan.settings
    resume_command = f"evolve run {problem_dir} --resume --run-dir {run_dir}"
    inspection = _inspect_before_start(run_dir, opts["accept_damage"], resume_command) if plan.resume else None
    sandbox_config = _sandbox_config(plan.problem, plan.sandbox_require)
    try:
        mutator = build_mutator(settings.mutator, plan.problem, plan.llm_options)
    except Exception as exc:  # noqa: BLE001 - endpoint probes and bad settings end here with their message
        raise EvolveError(f"cannot start the {settings.mutator} mutator: {exc}") from None
    config = plan.config(mutator)

    progress = make_progress(opts["quiet"])
    out = click.echo
    _init_ray(opts["address"], opts["num_cpus"], problem)
    view = cluster_view()
    out(view.describe())
    unmet = unmet_requirements(problem, view)
    if unmet:
        import ray

        ray.shutdown()
        raise EvolveError("the cluster cannot run this problem:\n  - " + "\n  - ".join(unmet))
    concurrency = settings.concurrency or f"auto ({view.default_concurrency()}, follows the cluster)"
    budget = f"{settings.iterations} iterations" if not plan.resume else (
        f"{opts['more']} iterations more" if opts["more"] else f"a total budget of {settings.iterations} iterations")
    out(f"evolve: problem {problem.name} | mutator {settings.mutator} | {budget} | concurrency {concurrency} | "
        f"islands {settings.islands}")
    if plan.overrides:
        changed = ", ".join(f"{k} {v['stored']!r} -> {v['given']!r}" for k, v in plan.overrides.items())
        out(f"resume: the run's stored settings, except {changed}")
    out(describe_isolation(sandbox_config))
    out(f"archive: {run_dir}")
    evolution = Evolution(plan.problem, settings, mutator, run_dir, plan.run_id, resume=plan.resume,
                          progress=progress, sandbox_settings=sandbox_config, accept_damage=opts["accept_damage"],
                          more=opts["more"], overrides=plan.overrides, config=config, inspection=inspection,
                          resume_command=resume_command)
    try:
        summary = evolution.run()
    except (RunRefused, ArchiveLockedError) as exc:
        failed = " (the run folder is kept, marked failed_start)" if evolution.failure else ""
        raise EvolveError(f"{exc}{failed}") from None
    archive_failed = summary.stop_reason in (StopReason.DISK_FULL, StopReason.IO_ERROR)
    if archive_failed:
        click.echo(f"error: {summary.message}", err=True)
    out("")
    if opts["quiet"]:  # otherwise already shown as they happened
        for note in summary.notes:
            out(f"note: {note}")
    out(f"stopped: {summary.message or summary.stop_reason.value} after {summary.elapsed:.1f} s "
        f"({min(summary.done, summary.budget)}/{summary.budget} iterations)")
    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary.statuses.items()))
    out(f"outcomes: {statuses}")
    if summary.lost:
        out(f"lost to damage: {summary.lost} iteration(s) (counted as done; see `evolve archive stats {run_dir}`)")
    _print_llm_stats(summary.mutator_stats)
    if summary.best is not None:
        out(f"seed score: {summary.seed_score}   best score: {summary.best.score} (program {summary.best.program_id}, "
            f"island {summary.best.island})")
        out("best program:")
        out(summary.best.code)
    if summary.state:
        out("inspect:")
        out(f"  evolve archive top {run_dir}")
        if summary.best is not None:
            out(f"  evolve archive show {run_dir} {summary.best.program_id}")
    if summary.stop_reason not in (StopReason.BUDGET, StopReason.TARGET) and (summary.state or plan.resume):
        out("resume:")
        out(f"  {resume_command}" + ("   (after freeing space)" if summary.stop_reason is StopReason.DISK_FULL
                                    else ""))
    if archive_failed:
        sys.exit(EXIT_ARCHIVE_IO)
    if summary.stop_reason is StopReason.MUTATOR:
        sys.exit(EXIT_MUTATOR_STOPPED)
    if summary.stop_reason is StopReason.INTERRUPTED:
        sys.exit(EXIT_INTERRUPTED)


def _inspect_before_start(run_dir: Path, accept_damage: bool, resume_command: str) -> Any:
    """Read the run in full before Ray starts: a damaged run is refused at once, with the real reason."""
    from evolve.damage import inspect_run
    from evolve.resume import refusal

    inspection = inspect_run(run_dir)
    if inspection.damage and not accept_damage:
        raise EvolveError(str(refusal(run_dir, inspection, resume_command)))
    return inspection


@main.command("eval")
@click.argument("problem_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("program", type=click.Path(exists=True, dir_okay=False))
@click.option("--stages", help="Comma-separated stage names to run (default: all, in order).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print outcomes as JSON.")
def eval_command(problem_dir: str, program: str, stages: str | None, seed: int, as_json: bool) -> None:
    """Evaluate PROGRAM against the problem's stages here, without Ray, and print every stage's outcome."""
    from evolve.evaluation import run_stage
    from evolve.types import Status, program_id_for
    from evolve.worker import evaluation_seed

    problem = _load(problem_dir)
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
    if as_json:
        click.echo(json.dumps({"program_id": program_id, "stages": results, "problems": problems}, indent=2))
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
    if failed:
        sys.exit(1)


def _print_llm_stats(stats: dict[str, Any]) -> None:
    from evolve.progress import llm_summary_lines

    for line in llm_summary_lines(stats):
        click.echo(line)


def _sandbox_config(problem: Problem, require: str | None) -> Any:
    """The problem's ``[sandbox]`` settings (plus ``--sandbox-require``), checked against this host now."""
    from evolve.sandbox import SandboxConfig, SandboxConfigError, SandboxUnavailable, check_requirement

    try:
        config = SandboxConfig.from_table(problem.sections.get("sandbox"), require=require)
        check_requirement(config)
    except (SandboxConfigError, SandboxUnavailable) as exc:
        raise EvolveError(str(exc)) from None
    return config


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
    from evolve.cli_steer import steer
    from evolve.cli_ui import ui

    archive.add_command(failures)
    for command in (archive, init, problems, steer, ui):
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()
