"""A small Python API for notebooks and scripts: ``run`` a problem, ``open_archive`` a run.

::

    import evolve
    result = evolve.run("problems/circle_packing", iterations=50, mutator="tune")
    archive = result.archive()            # or evolve.open_archive("archive/circle_packing"): its newest run
    archive.top(5)                        # list of dicts: program_id, score, status, island, iteration, ...
    print(archive.program(archive.best()["program_id"]).code)
    archive.table()                       # pyarrow Table, one row per program; metrics etc. as maps and structs
    archive.query("SELECT status, count(*) FROM programs GROUP BY status").fetchall()   # DuckDB SQL
    archive.to_pandas()                   # pandas DataFrame (pip install 'evolve[pandas]')

``open_archive`` returns an ``evolve.query.RunArchive``: the one reading API (the archive's own readers in
``evolve.archive`` serve the engine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolve.query import RunArchive

if TYPE_CHECKING:
    from evolve.loop import RunSummary
    from evolve.mutators.base import Mutator
    from evolve.problem import Problem
    from evolve.progress import Progress


@dataclass(frozen=True)
class RunResult:
    """What ``run`` returns: the loop's summary, the run folder and the notes on how the problem was loaded."""

    summary: RunSummary
    run_dir: Path
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def best_score(self) -> float | None:
        return self.summary.best.score if self.summary.best is not None else None

    @property
    def best_code(self) -> str | None:
        return self.summary.best.code if self.summary.best is not None else None

    def archive(self) -> RunArchive:
        return RunArchive(self.run_dir)


def open_archive(path: str | Path, include_journal: bool = True) -> RunArchive:
    """Open a run folder (or ``archive/<problem>`` for its newest run) for queries: ``top``, ``best``, ``program``,
    ``lineage``, ``table``, ``history``, ``query`` (DuckDB SQL over the views ``programs``, ``summary`` and
    ``migrations``), ``to_pandas``. Use it as a context manager, or ``close()`` it."""
    return RunArchive(path, include_journal=include_journal)


def _ensure_ray(address: str | None, num_cpus: int | None, problem: Problem) -> None:
    """Join or start Ray like ``evolve run`` does (``evolve.ray_local``), unless this process already runs it."""
    from evolve.ray_local import choose_target
    from evolve.startup import connect

    connect(choose_target(address), problem, num_cpus)


def _problem(problem: str | Path | Problem) -> tuple[Problem, list[str]]:
    from evolve.openevolve import load_any_problem
    from evolve.problem import Problem

    if isinstance(problem, Problem):
        return problem, []
    return load_any_problem(problem)


def _progress(progress: Progress | bool) -> Progress:
    from evolve.live import make_progress

    if isinstance(progress, bool):
        return make_progress(quiet=not progress)
    return progress


def run(
    problem: str | Path | Problem,
    *,
    iterations: int | None = None,
    mutator: str | Mutator | None = None,
    run_dir: str | Path | None = None,
    archive_root: str | Path = "archive",
    resume: bool = False,
    accept_damage: bool = False,
    more: int | None = None,
    seed: int | None = None,
    concurrency: int | None = None,
    islands: int | None = None,
    migration_interval: int | None = None,
    time_limit: float | None = None,
    target_score: float | None = None,
    deterministic: bool = False,
    progress: Progress | bool = False,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    llm_options: dict[str, Any] | None = None,
) -> RunResult:
    """Evolve ``problem`` (a folder with ``problem.toml`` or in OpenEvolve format, or a loaded ``Problem``).

    ``mutator`` is a name (``"tune"``, ``"scripted"``, ``"llm"``; default: the problem's) or a mutator object.
    Uses the Ray this process already runs; else joins ``ray_address`` (``"local"``: a private instance), else the
    local Ray of ``evolve ray start`` when one runs, else starts a private instance. ``progress``:
    True shows live progress (a panel on a terminal, lines otherwise), or pass a ``Progress`` object.
    ``llm_options`` takes what ``evolve run`` flags give the LLM mutator (``models``, ``api_base``, ``api_key``,
    ``max_llm_calls``, ``max_tokens``, ``max_cost``).

    ``resume=True`` continues the run in ``run_dir`` (default: the newest run of the problem under
    ``archive_root``) with the settings it stored; arguments given override them (``iterations`` is the new total
    budget; ``more`` adds that many iterations). A damaged run raises ``RunRefused`` listing the damage unless
    ``accept_damage`` is true.
    """
    from evolve.loop import Evolution
    from evolve.mutators import build_mutator
    from evolve.run_setup import RunExists, plan_run

    loaded, notes = _problem(problem)
    given: dict[str, Any] = {
        "iterations": iterations, "seed": seed, "concurrency": concurrency, "islands": islands,
        "migration_interval": migration_interval, "time_limit": time_limit, "target_score": target_score,
    }
    if deterministic:
        given["deterministic"] = True
    if isinstance(mutator, str):
        given["mutator"] = mutator
    if not resume and given["concurrency"] is None:
        given["concurrency"] = max(2, 2 * (num_cpus or os.cpu_count() or 1))
    try:
        plan = plan_run(loaded, resume=resume, run_dir=run_dir, archive_root=archive_root, given=given,
                        llm_options=llm_options)
    except RunExists as exc:
        raise FileExistsError(str(exc)) from None
    chosen = mutator if mutator is not None and not isinstance(mutator, str) else \
        build_mutator(plan.settings.mutator, plan.problem, plan.llm_options)
    _ensure_ray(ray_address, num_cpus, plan.problem)
    evolution = Evolution(plan.problem, plan.settings, chosen, plan.run_dir, plan.run_id, resume=plan.resume,
                          progress=_progress(progress), accept_damage=accept_damage, more=more,
                          overrides=plan.overrides, config=plan.config(chosen))
    summary = evolution.run()
    return RunResult(summary=summary, run_dir=plan.run_dir, notes=tuple(notes + plan.notes))
