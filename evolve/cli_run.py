"""``evolve run``: check everything that can be checked, start Ray with the rest beside it, evolve, summarise.

The order is chosen for a fast start (see ``evolve.startup``): the sandbox's host probe starts in a thread at once;
the run's plan, the resume inspection and the mutator (an LLM endpoint probe) are checked meanwhile; every refusal
comes before a private Ray instance is started. A Ray that is already running (``evolve ray start``, ``--address``)
is joined first, since joining is cheap, so that its workers warm up while the rest is checked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from evolve.cli_common import EvolveError, load_with_notes
from evolve.launch import RUNNER_ENV

# Exit codes besides click's (1: an error before or instead of running, 2: bad usage).
EXIT_MUTATOR_STOPPED = 3  # an LLM budget reached or the endpoint down past its patience
EXIT_ARCHIVE_IO = 4  # the archive could not be written (a full disk, a failing device): stopped cleanly
EXIT_INTERRUPTED = 130  # the shell's convention for a run ended by Ctrl-C

_SETTING_FLAGS = ("iterations", "concurrency", "islands", "migration_interval", "mutator", "seed", "time_limit",
                  "target_score", "batch_size")
_LLM_FLAGS = ("models", "api_base", "api_key", "max_llm_calls", "max_tokens", "max_cost")
_SEARCH_FLAGS = ("parent_selection", "mutation_mix", "adaptive", "novelty", "novelty_threshold", "strategies_every",
                 "scratchpad_every")


@click.command()
@click.argument("problem_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--iterations", type=click.IntRange(min=1),
              help="Children to produce after the seed (default: [evolution] iterations of problem.toml, else 200). "
                   "On --resume: the run's new total budget, not a number more.")
@click.option("--more", type=click.IntRange(min=1), help="On --resume: run this many iterations more than are done.")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="Programs in flight at once (default: 2 per CPU of the cluster, following it as nodes come and "
                   "go).")
@click.option("--islands", type=click.IntRange(min=1),
              help="Independent MAP-Elites populations (default: [evolution] islands of problem.toml, else 4).")
@click.option("--migration-interval", type=click.IntRange(min=1),
              help="Iterations between migrations: each island's best is copied to the next island (default: "
                   "[evolution] migration_interval of problem.toml, else 50).")
@click.option("--mutator", type=click.Choice(["tune", "scripted", "llm"]),
              help="How children are made: tune (changes numeric literals, offline), scripted (fixed edits, for "
                   "tests), llm (an OpenAI-compatible model; see --model, --api-base). Default: [evolution] mutator "
                   "of problem.toml, else tune.")
@click.option("--seed", type=int, default=None, help="Seed of the run's random choices (default 0).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), help="Seconds before stopping.")
@click.option("--target-score", type=float, help="Stop when a program reaches this score.")
@click.option("--deterministic", is_flag=True, help="Reproducible archive at any concurrency (batched).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size in --deterministic mode.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default archive/<problem>/<run-id>).")
@click.option("--archive-root", type=click.Path(file_okay=False), default="archive", show_default=True,
              help="Where new runs get their folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir (default: the latest run) with the "
              "settings it stored; flags given now override them.")
@click.option("--accept-damage", is_flag=True, help="On --resume: continue over damaged files (moved to "
              "RUN/damaged/, their iterations recorded as lost) instead of refusing.")
@click.option("--address", help="Ray to use: a cluster address (host:port; 'auto': $RAY_ADDRESS or the last "
              "`ray start`), or 'local' for a private instance. Default: the local Ray of `evolve ray start` when "
              "one runs, else a private instance.")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs for a private local Ray instance.")
@click.option("--dashboard", is_flag=True, help="Start Ray's dashboard with a private instance (off by default: it "
              "slows the start).")
@click.option("--model", "models", multiple=True, help="LLM model name (repeatable, for an ensemble).")
@click.option("--api-base", help="OpenAI-compatible endpoint URL (default $OPENAI_BASE_URL).")
@click.option("--api-key", help="API key (default $OPENAI_API_KEY). Never written to the run folder.")
@click.option("--max-llm-calls", type=click.IntRange(min=1), help="Stop after this many LLM calls (whole run).")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Stop after this many LLM tokens (whole run).")
@click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), help="Stop at this LLM cost, USD.")
@click.option("--sandbox-require", help="Refuse to start unless candidates get these sandbox layers "
              "(e.g. 'full', or 'pidns+netns+landlock'); overrides [sandbox] require.")
@click.option("--parent-selection", type=click.Choice(["rank", "weighted", "power"]),
              help="How parents are picked ([search] parent_selection; default rank).")
@click.option("--mutation-mix", help="Kinds of mutation and their weights, e.g. diff=0.6,full=0.3,crossover=0.1 "
              "([search] mutation_mix; default: the mutator's own mode).")
@click.option("--adaptive/--no-adaptive", default=None,
              help="Adapt exploitation and mutation kind per island ([search.adaptive]).")
@click.option("--novelty", type=click.Choice(["off", "minhash", "embedding"]),
              help="Reject near-copies before evaluation ([search.novelty]; default off).")
@click.option("--novelty-threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Similarity at or above which a child is not_novel (default 0.98).")
@click.option("--strategies-every", type=click.IntRange(min=0),
              help="Co-evolve prompt strategies, a new one every N iterations (0: off; llm mutator).")
@click.option("--scratchpad-every", type=click.IntRange(min=0),
              help="Rewrite the search's notes every K iterations (0: off; llm mutator).")
@click.option("--quiet", is_flag=True, help="Print one summary line and the best score and program id, nothing else "
              "(errors still go to stderr).")
@click.option("--verbose", is_flag=True, help="Show Ray's own start-up messages and warnings.")
def run(problem_dir: str, **opts: Any) -> None:
    """Evolve the problem in PROBLEM_DIR."""
    from evolve.ray_local import TargetKind, choose_target, prepare_environment
    from evolve.settings import RunSettings
    from evolve.startup import LocalFirst

    problem, notes = load_with_notes(problem_dir)
    # A caller that already holds a Ray connection (a notebook, a test, `evolve.run`) keeps it: only a connection
    # this command made is shut down here.
    ours = not _ray_connected()
    quiet = opts["quiet"]
    out = _Output(quiet)
    for note in notes:
        out.note(note)
    if (opts["accept_damage"] or opts["more"]) and not opts["resume"]:
        raise click.UsageError("--accept-damage and --more continue a run: use them with --resume")
    if opts["more"] and opts["iterations"]:
        raise click.UsageError("--iterations (the total budget) and --more (iterations more) exclude each other")
    if opts["dashboard"] and opts["address"] not in (None, "local"):
        raise click.UsageError("--dashboard starts the dashboard of a private instance; a cluster you join has its "
                               "own (`evolve ray start --dashboard`)")
    probed = _start_probe(problem, opts["sandbox_require"])  # the sandbox's host probe, in a thread from here on
    target = choose_target(opts["address"])
    if ours:  # before any thread imports Ray (it reads the environment then); a live connection keeps its own
        prepare_environment(target, opts["verbose"])
    if target.note:
        out.note(target.note)
    if opts["num_cpus"] and target.kind is not TargetKind.PRIVATE:
        out.note(f"--num-cpus is for a private instance; {target.describe()} keeps its own CPUs")
    local = None
    if target.on_this_machine and LocalFirst.applies(problem):
        # Evaluations run here, as a worker on this machine would run them, until a Ray worker is ready: the seed
        # (of a new run) from now on, while Ray starts or workers warm up.
        seed = None if opts["resume"] else (opts["seed"] if opts["seed"] is not None else RunSettings().seed)
        local = LocalFirst(problem, probed.config, seed, after=probed.task)
    # Ray starts (or is joined) as soon as nothing that could refuse the run is left unchecked but what only a
    # broken host refuses; the plan's and the loop's modules are then imported while Ray's processes start.
    early = target.kind is not TargetKind.PRIVATE or _nothing_to_refuse(problem, opts, probed.config)
    started = _start_ray(target, problem, probed.config, opts, early, local is not None) if early else None
    try:
        plan, inspection, resume_command = _plan(problem, problem_dir, opts, out)
        mutator = _build_mutator(plan)
        config = plan.config(mutator)
        sandbox_config, isolation = _finish_probe(probed, plan)
    except BaseException:
        if started is not None and target.kind is TargetKind.PRIVATE and ours:
            import ray

            ray.shutdown()  # a refusal after all: stop the instance now rather than at exit
        raise
    if started is None:
        started = _start_ray(target, problem, sandbox_config, opts, False, local is not None)
    imports, warming = started
    imports.result()
    warm_refs = warming.result()  # submitted; stage tasks queue behind them and find warm workers
    _check_cluster(problem, plan, opts, target, isolation, out, ours)
    executor = None
    if local is not None:
        from evolve.worker import RayStageExecutor

        executor = local.attach(RayStageExecutor(plan.problem, sandbox_config), warm_refs, plan.problem,
                                sandbox_config)
    summary = _evolve(plan, mutator, config, sandbox_config, inspection, resume_command, opts, quiet, executor)
    if ours:
        # Now rather than at exit: Ray's exit hook first sleeps half a second in case workers have errors to print.
        import ray

        ray.shutdown()
    _report(summary, plan, resume_command, out)


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")  # not imported: not connected (and importing it here would slow the start)
    return bool(ray is not None and ray.is_initialized())


def _nothing_to_refuse(problem: Any, opts: dict[str, Any], sandbox: Any) -> bool:
    """Whether a new private instance may start before the plan and the mutator are checked: a new run (a resume
    may be refused), in a folder that holds none, with an offline mutator (an LLM endpoint may be down), and no
    sandbox requirement (the host probe may say it cannot be met)."""
    from pathlib import Path

    mutator = opts["mutator"] or problem.evolution.mutator
    taken = opts["run_dir"] is not None and (Path(opts["run_dir"]) / "run.json").exists()
    return not opts["resume"] and not taken and mutator != "llm" and not sandbox.require


def _start_ray(target: Any, problem: Any, sandbox: Any, opts: dict[str, Any], early_imports: bool,
               local_slot: bool) -> tuple[Any, Any]:
    """Start or join Ray; returns the module imports made meanwhile and the submission of warm-up tasks (both
    ``Background``). What the run still needs is imported while Ray's processes start (a private instance) or while
    this process connects and the plan is made (a Ray joined: the imports fill the main thread's waits)."""
    from evolve.startup import LOOP_MODULES, Background, StartupError, connect, preload_modules, warm_workers

    modules = LOOP_MODULES
    if early_imports:  # the plan and the mutator come after Ray: their modules too
        mutator = opts["mutator"] or problem.evolution.mutator
        modules = ("evolve.run_setup", "evolve.mutators", f"evolve.mutators.{mutator}", *LOOP_MODULES)
    try:
        imports = connect(target, problem, opts["num_cpus"], dashboard=opts["dashboard"], verbose=opts["verbose"],
                          meanwhile=lambda: preload_modules(modules))
    except StartupError as exc:
        raise EvolveError(str(exc)) from None
    # Submitting asks the cluster for its nodes and registers the task: done beside the work that follows.
    warming = Background(lambda: _warm(problem, sandbox, warm_workers, int(local_slot)), name="evolve-warm-up")
    return imports, warming


class _Output:
    """Where ``evolve run`` writes: everything, or with --quiet only the final two lines (notes to stderr)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def line(self, text: str = "") -> None:
        if not self.quiet:
            click.echo(text)

    def note(self, text: str) -> None:
        click.echo(f"note: {text}", err=self.quiet)

    def kept(self, text: str) -> None:
        """A line a user must see even with --quiet (on stderr then): what a resume changed."""
        click.echo(text, err=self.quiet)


class _Probe:
    """The sandbox configuration of the problem and its host probe running in the background."""

    def __init__(self, config: Any, require: str | None, task: Any):
        self.config = config
        self.require = require
        self.task = task


def _start_probe(problem: Any, require: str | None) -> _Probe:
    from evolve.sandbox import SandboxConfig, SandboxConfigError, host_probe
    from evolve.startup import Background

    try:
        config = SandboxConfig.from_table(problem.sections.get("sandbox"), require=require)
    except SandboxConfigError as exc:
        raise EvolveError(str(exc)) from None
    return _Probe(config, require, Background(lambda: host_probe(config), name="evolve-sandbox-probe"))


def _finish_probe(probed: _Probe, plan: Any) -> tuple[Any, str]:
    """The run's sandbox configuration, checked against the probe (a resumed run may bring its stored table)."""
    from evolve.sandbox import ForkServerError, SandboxUnavailable, describe_isolation

    try:
        probed.task.result()
    except (ForkServerError, SandboxUnavailable) as exc:
        raise EvolveError(str(exc)) from None
    config = sandbox_config(plan.problem, plan.sandbox_require)
    return config, describe_isolation(config)


def sandbox_config(problem: Any, require: str | None) -> Any:
    """The problem's ``[sandbox]`` settings (plus ``--sandbox-require``), checked against this host now."""
    from evolve.sandbox import (
        ForkServerError,
        SandboxConfig,
        SandboxConfigError,
        SandboxUnavailable,
        check_requirement,
    )

    try:
        config = SandboxConfig.from_table(problem.sections.get("sandbox"), require=require)
        check_requirement(config)
    except (SandboxConfigError, SandboxUnavailable, ForkServerError) as exc:
        raise EvolveError(str(exc)) from None
    return config


def _warm(problem: Any, config: Any, warm: Any, local_slots: int) -> list[Any]:
    try:
        return list(warm(problem, config, local_slots=local_slots))
    except Exception:  # noqa: BLE001 - only a head start; the stage tasks start workers anyway
        return []


def _plan(problem: Any, problem_dir: str, opts: dict[str, Any], out: _Output) -> tuple[Any, Any, str]:
    from evolve.resume import RunRefused
    from evolve.run_setup import plan_run

    given = {k: opts[k] for k in _SETTING_FLAGS}
    if opts["deterministic"]:
        given["deterministic"] = True
    try:
        plan = plan_run(problem, resume=opts["resume"], run_dir=opts["run_dir"], archive_root=opts["archive_root"],
                        given=given, sandbox_require=opts["sandbox_require"],
                        llm_options={k: opts[k] for k in _LLM_FLAGS})
    except RunRefused as exc:
        raise EvolveError(str(exc)) from None
    _apply_search_flags(plan, opts)
    for note in plan.notes:
        out.note(note)
    resume_command = f"evolve run {problem_dir} --resume --run-dir {plan.run_dir}"
    inspection = _inspect_before_start(plan.run_dir, opts["accept_damage"], resume_command) if plan.resume else None
    return plan, inspection, resume_command


def _apply_search_flags(plan: Any, opts: dict[str, Any]) -> None:
    """The ``[search]`` table (the run's own on --resume) with the search flags on top; refused when invalid."""
    import dataclasses

    from evolve.search.settings import SearchConfigError, resolve_search_settings, search_section_with_flags

    try:
        table = search_section_with_flags(plan.problem.sections.get("search"), {k: opts[k] for k in _SEARCH_FLAGS})
        plan.search_settings = resolve_search_settings(table)
    except SearchConfigError as exc:
        raise EvolveError(str(exc)) from None
    if table:
        plan.problem = dataclasses.replace(plan.problem, sections={**plan.problem.sections, "search": table})


def _inspect_before_start(run_dir: Path, accept_damage: bool, resume_command: str) -> Any:
    """Read the run in full before Ray starts: a damaged run is refused at once, with the real reason."""
    from evolve.damage import inspect_run
    from evolve.resume import refusal

    inspection = inspect_run(run_dir)
    if inspection.damage and not accept_damage:
        raise EvolveError(str(refusal(run_dir, inspection, resume_command)))
    return inspection


def _build_mutator(plan: Any) -> Any:
    from evolve.mutators import build_mutator
    from evolve.search.engine import check_search
    from evolve.search.settings import SearchConfigError

    try:
        mutator = build_mutator(plan.settings.mutator, plan.problem, plan.llm_options)
    except Exception as exc:  # noqa: BLE001 - endpoint probes and bad settings end here with their message
        raise EvolveError(f"cannot start the {plan.settings.mutator} mutator: {exc}") from None
    try:
        check_search(plan.search_settings, mutator)
    except SearchConfigError as exc:
        raise EvolveError(str(exc)) from None
    return mutator


def _check_cluster(problem: Any, plan: Any, opts: dict[str, Any], target: Any, isolation: str, out: _Output,
                   ours: bool = True) -> None:
    from evolve.cluster import cluster_view, unmet_requirements

    view = cluster_view()
    runner = os.environ.get(RUNNER_ENV)  # set in the warm runner of `evolve ray start` (evolve.runner)
    out.line(f"{view.describe()}: {target.describe()}" + (f", run in its warm runner (pid {runner})" if runner else ""))
    unmet = unmet_requirements(problem, view)
    if unmet:
        if ours:
            import ray

            ray.shutdown()
        raise EvolveError("the cluster cannot run this problem:\n  - " + "\n  - ".join(unmet))
    settings = plan.settings
    concurrency = settings.concurrency or f"auto ({view.default_concurrency()}, follows the cluster)"
    budget = f"{settings.iterations} iterations" if not plan.resume else (
        f"{opts['more']} iterations more" if opts["more"] else f"a total budget of {settings.iterations} iterations")
    out.line(f"evolve: problem {problem.name} | mutator {settings.mutator} | {budget} | concurrency {concurrency} | "
             f"islands {settings.islands}")
    if plan.overrides:
        changed = ", ".join(f"{k} {v['stored']!r} -> {v['given']!r}" for k, v in plan.overrides.items())
        out.kept(f"resume: the run's stored settings, except {changed}")
    out.line(isolation)
    out.line(f"archive: {plan.run_dir}")


def _evolve(plan: Any, mutator: Any, config: Any, sandbox: Any, inspection: Any, resume_command: str,
            opts: dict[str, Any], quiet: bool, executor: Any = None) -> Any:
    from evolve.archive import ArchiveLockedError
    from evolve.live import make_progress
    from evolve.loop import Evolution, RunRefused

    evolution = Evolution(plan.problem, plan.settings, mutator, plan.run_dir, plan.run_id, resume=plan.resume,
                          progress=make_progress(quiet), sandbox_settings=sandbox, executor=executor,
                          accept_damage=opts["accept_damage"], more=opts["more"], overrides=plan.overrides,
                          config=config, inspection=inspection, resume_command=resume_command,
                          search_settings=plan.search_settings)
    try:
        return evolution.run()
    except (RunRefused, ArchiveLockedError) as exc:
        failed = " (the run folder is kept, marked failed_start)" if evolution.failure else ""
        raise EvolveError(f"{exc}{failed}") from None


def _report(summary: Any, plan: Any, resume_command: str, out: _Output) -> None:
    from evolve.loop import StopReason
    from evolve.progress import llm_summary_lines

    run_dir = plan.run_dir
    archive_failed = summary.stop_reason in (StopReason.DISK_FULL, StopReason.IO_ERROR)
    if archive_failed:
        click.echo(f"error: {summary.message}", err=True)
    resumable = summary.stop_reason not in (StopReason.BUDGET, StopReason.TARGET) and (summary.state or plan.resume)
    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary.statuses.items()))
    stopped = (f"stopped: {summary.message or summary.stop_reason.value} after {summary.elapsed:.1f} s "
               f"({min(summary.done, summary.budget)}/{summary.budget} iterations)")
    best = summary.best
    best_line = (f"best score: {best.score} (program {best.program_id}, island {best.island})"
                 if best is not None else "best score: none (no program was scored)")
    if out.quiet:
        click.echo(f"{stopped}; outcomes {statuses or 'none'}; archive {run_dir}")
        click.echo(best_line)
        for note in summary.notes:
            click.echo(f"note: {note}", err=True)
        if resumable:
            click.echo(f"resume: {resume_command}", err=True)
    else:
        click.echo("")
        click.echo(stopped)
        click.echo(f"outcomes: {statuses}")
        if summary.lost:
            click.echo(f"lost to damage: {summary.lost} iteration(s) (counted as done; see `evolve archive stats "
                       f"{run_dir}`)")
        for line in llm_summary_lines(summary.mutator_stats):
            click.echo(line)
        if best is not None:
            click.echo(f"seed score: {summary.seed_score}   {best_line}")
            click.echo("best program:")
            click.echo(best.code)
        if summary.state:
            click.echo("inspect:")
            click.echo(f"  evolve archive top {run_dir}")
            if best is not None:
                click.echo(f"  evolve archive show {run_dir} {best.program_id}")
        if resumable:
            click.echo("resume:")
            click.echo(f"  {resume_command}" + ("   (after freeing space)" if summary.stop_reason is
                                                StopReason.DISK_FULL else ""))
    if archive_failed:
        sys.exit(EXIT_ARCHIVE_IO)
    if summary.stop_reason is StopReason.MUTATOR:
        sys.exit(EXIT_MUTATOR_STOPPED)
    if summary.stop_reason is StopReason.INTERRUPTED:
        sys.exit(EXIT_INTERRUPTED)
