"""The ``evolve`` command line."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
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


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _latest_run(root: Path, problem: Problem) -> Path:
    base = root / problem.name
    runs = sorted((p for p in base.glob("*") if (p / "run.json").exists()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise EvolveError(f"--resume: no run of {problem.name!r} found under {base}; pass --run-dir")
    return runs[-1]


def _init_ray(address: str | None, num_cpus: int | None, problem: Problem) -> Any:
    import ray

    from evolve.cluster import ShippingError, problem_runtime_env

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


@main.command()
@click.argument("problem_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--iterations", type=click.IntRange(min=1), help="Children to produce after the seed.")
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
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir (default: the latest run).")
@click.option("--address", help="Ray cluster address (e.g. 'auto' on a cluster head); default: start Ray locally.")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs for a local Ray instance.")
@click.option("--model", "models", multiple=True, help="LLM model name (repeatable, for an ensemble).")
@click.option("--api-base", help="OpenAI-compatible endpoint URL (default $OPENAI_BASE_URL).")
@click.option("--api-key", help="API key (default $OPENAI_API_KEY).")
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
    from evolve.sandbox import describe_isolation
    from evolve.settings import RunSettings

    problem, notes = _load_with_notes(problem_dir)
    for note in notes:
        click.echo(f"note: {note}")
    sandbox_config = _sandbox_config(problem, opts["sandbox_require"])
    root = Path(opts["archive_root"])
    overrides = {k: opts[k] for k in ("iterations", "concurrency", "islands", "migration_interval", "mutator",
                                     "seed", "time_limit", "target_score", "batch_size")}
    if opts["deterministic"]:
        overrides["deterministic"] = True
    if opts["resume"]:
        run_dir = Path(opts["run_dir"]) if opts["run_dir"] else _latest_run(root, problem)
        info_path = run_dir / "run.json"
        if not info_path.exists():
            raise EvolveError(f"--resume: {run_dir} has no run.json; not a run folder")
        info = json.loads(info_path.read_text())
        if info.get("problem") != problem.name:
            raise EvolveError(f"--resume: {run_dir} is a run of {info.get('problem')!r}, not {problem.name!r}")
        stored = RunSettings.from_dict(info.get("settings", {}))
        settings = RunSettings.from_dict({**stored.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
        run_id = info["run_id"]
    else:
        settings = RunSettings.for_problem(problem, **overrides)
        run_id = _new_run_id()
        run_dir = Path(opts["run_dir"]) if opts["run_dir"] else root / problem.name / run_id
        if (run_dir / "run.json").exists():
            raise EvolveError(f"{run_dir} already holds a run; use --resume to continue it or another --run-dir")

    llm_options = {k: opts[k] for k in ("models", "api_base", "api_key", "max_llm_calls", "max_tokens", "max_cost")}
    try:
        mutator = build_mutator(settings.mutator, problem, llm_options)
    except Exception as exc:  # noqa: BLE001 - endpoint probes and bad settings end here with their message
        raise EvolveError(f"cannot start the {settings.mutator} mutator: {exc}") from None

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
    out(f"evolve: problem {problem.name} | mutator {settings.mutator} | {settings.iterations} iterations | "
        f"concurrency {concurrency} | islands {settings.islands}")
    out(describe_isolation(sandbox_config))
    out(f"archive: {run_dir}")
    evolution = Evolution(problem, settings, mutator, run_dir, run_id, resume=opts["resume"], progress=progress,
                          sandbox_settings=sandbox_config)
    try:
        summary = evolution.run()
    except (RunRefused, ArchiveLockedError) as exc:
        raise EvolveError(str(exc)) from None
    out("")
    out(f"stopped: {summary.message or summary.stop_reason.value} after {summary.elapsed:.1f} s "
        f"({summary.done}/{summary.budget} iterations)")
    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary.statuses.items()))
    out(f"outcomes: {statuses}")
    _print_llm_stats(summary.mutator_stats)
    if summary.best is not None:
        out(f"seed score: {summary.seed_score}   best score: {summary.best.score} (program {summary.best.program_id}, "
            f"island {summary.best.island})")
        out("best program:")
        out(summary.best.code)
    out("inspect:")
    out(f"  evolve archive top {run_dir}")
    if summary.best is not None:
        out(f"  evolve archive show {run_dir} {summary.best.program_id}")
    if summary.stop_reason is not StopReason.BUDGET:
        out("resume:")
        out(f"  evolve run {problem_dir} --resume --run-dir {run_dir}")
    if summary.stop_reason is StopReason.MUTATOR:
        sys.exit(3)
    if summary.stop_reason is StopReason.INTERRUPTED:
        sys.exit(130)  # the shell's convention for a run ended by Ctrl-C


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
    if as_json:
        click.echo(json.dumps({"program_id": program_id, "stages": results}, indent=2))
    else:
        for item in results:
            click.echo(f"[{item['stage']}] {item['status']}  {item.get('message', '')}".rstrip())
            for key, value in sorted(item.get("metrics", {}).items()):
                click.echo(f"    {key} = {value:.6g}")
            for name, text in item.get("artifacts", {}).items():
                click.echo(f"    --- {name} ---")
                click.echo("\n".join("    " + line for line in text.splitlines()[-40:]))
    if failed:
        sys.exit(1)


def _print_llm_stats(stats: dict[str, Any]) -> None:
    totals = stats.get("totals")
    if not isinstance(totals, dict):
        return
    click.echo(f"llm: {totals.get('calls', 0)} calls, {totals.get('tokens', 0)} tokens, ${totals.get('cost', 0.0):.4f}, "
               f"unusable answers {totals.get('unusable_rate', 0.0):.0%}, mean latency "
               f"{totals.get('mean_latency', 0.0):.2f} s")
    for name, model in (stats.get("models") or {}).items():
        click.echo(f"  {name}: {model.get('calls', 0)} calls, {model.get('tokens', 0)} tokens, "
                   f"${model.get('cost', 0.0):.4f}, unusable {model.get('unusable_rate', 0.0):.0%}, "
                   f"improved the parent {model.get('improvement_rate', 0.0):.0%}, "
                   f"latency {model.get('mean_latency', 0.0):.2f} s")


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

    for command in (archive, init, problems):
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()
