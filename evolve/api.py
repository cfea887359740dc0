"""A small Python API for notebooks and scripts: ``run`` a problem, ``open_archive`` a run.

::

    import evolve
    result = evolve.run("problems/circle_packing", iterations=50, mutator="tune")
    archive = result.archive()            # or evolve.open_archive("archive/circle_packing")
    archive.top(5)                        # list of dicts: program_id, score, status, island, iteration, ...
    print(archive.program(archive.best()["program_id"]).code)
    archive.history()                     # pyarrow Table, one row per program (to_pandas() if pandas is installed)
"""

from __future__ import annotations

import os
import secrets
import time
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
    """Open a run folder (or ``archive/<problem>`` for its newest run) for queries."""
    return RunArchive(path, include_journal=include_journal)


def _ensure_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    if address:
        kwargs["address"] = address
    else:
        # "local" starts a private instance even when another cluster on this machine is discoverable.
        kwargs["address"] = "local"
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    ray.init(**kwargs)


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
    Starts a local Ray instance unless Ray is already initialized or ``ray_address`` names a cluster. ``progress``:
    True shows live progress (a panel on a terminal, lines otherwise), or pass a ``Progress`` object.
    ``llm_options`` takes what ``evolve run`` flags give the LLM mutator (``models``, ``api_base``, ``api_key``,
    ``max_llm_calls``, ``max_tokens``, ``max_cost``).
    """
    from evolve.loop import Evolution
    from evolve.mutators import build_mutator
    from evolve.settings import RunSettings

    loaded, notes = _problem(problem)
    overrides: dict[str, Any] = {
        "iterations": iterations, "seed": seed, "concurrency": concurrency, "islands": islands,
        "migration_interval": migration_interval, "time_limit": time_limit, "target_score": target_score,
    }
    if deterministic:
        overrides["deterministic"] = True
    if isinstance(mutator, str):
        overrides["mutator"] = mutator
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        run_path = Path(run_dir)
        info = RunArchive(run_path).info
        stored = RunSettings.from_dict(info.get("settings", {}))
        settings = RunSettings.from_dict({**stored.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
        run_id = str(info.get("run_id") or run_path.name)
    else:
        if overrides["concurrency"] is None:
            overrides["concurrency"] = max(2, 2 * (num_cpus or os.cpu_count() or 1))
        settings = RunSettings.for_problem(loaded, **overrides)
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        run_path = Path(run_dir) if run_dir is not None else Path(archive_root) / loaded.name / run_id
        if (run_path / "run.json").exists():
            raise FileExistsError(f"{run_path} already holds a run; pass resume=True or another run_dir")
    chosen = mutator if mutator is not None and not isinstance(mutator, str) else \
        build_mutator(settings.mutator, loaded, llm_options or {})
    _ensure_ray(ray_address, num_cpus)
    evolution = Evolution(loaded, settings, chosen, run_path, run_id, resume=resume, progress=_progress(progress))
    summary = evolution.run()
    return RunResult(summary=summary, run_dir=run_path, notes=tuple(notes))
