"""The value types of archive queries: the problem as a run saw it, grids, elites, lineage steps, listings."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.problem import FeatureDim
from evolve.run_info import PROBLEM_SNAPSHOT, read_info_quietly


@dataclass(frozen=True)
class ProblemView:
    """What the archive tools need from a run's problem definition (read from the run's snapshot)."""

    name: str
    score_metric: str = "score"
    direction: str = "maximize"
    features: tuple[FeatureDim, ...] = ()
    language: str = "python"

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "maximize" else -1.0

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(f.bins for f in self.features) or (1,)

    @property
    def n_cells(self) -> int:
        return math.prod(self.grid_shape)


@dataclass(frozen=True)
class Elite:
    """The program holding one MAP-Elites cell of one island."""

    island: int
    cell: int
    coords: tuple[int, ...]
    program_id: str
    score: float | None
    fitness: float
    iteration: int


@dataclass(frozen=True)
class GridMap:
    """One island's MAP-Elites grid as the run left it."""

    island: int
    features: tuple[FeatureDim, ...]
    shape: tuple[int, ...]
    elites: tuple[Elite, ...]

    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)

    @property
    def coverage(self) -> float:
        return len(self.elites) / self.n_cells if self.n_cells else 0.0

    def best(self) -> Elite | None:
        return max(self.elites, key=lambda e: (e.fitness, -e.iteration), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "island": self.island,
            "shape": list(self.shape),
            "features": [{"name": f.name, "min": f.min, "max": f.max, "bins": f.bins} for f in self.features],
            "coverage": self.coverage,
            "cells": [
                {"cell": e.cell, "coords": list(e.coords), "program_id": e.program_id, "score": e.score,
                 "fitness": e.fitness, "iteration": e.iteration}
                for e in self.elites
            ],
        }


@dataclass(frozen=True)
class LineageStep:
    """One program in an ancestor chain."""

    program_id: str
    parent_id: str | None
    iteration: int
    generation: int
    status: str
    score: float | None
    mutator: str
    island: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "program_id": self.program_id, "parent_id": self.parent_id, "iteration": self.iteration,
            "generation": self.generation, "status": self.status, "score": self.score, "mutator": self.mutator,
            "island": self.island,
        }


@dataclass(frozen=True)
class RunListing:
    """One line of ``evolve archive ls``: read from metadata only (run.json, stats.json, Parquet footers)."""

    run_dir: Path
    run_id: str
    problem: str
    programs: int
    best_score: float | None
    best_program: str | None
    created_at: float | None
    state: str
    mutator: str
    bad_files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir), "run_id": self.run_id, "problem": self.problem, "programs": self.programs,
            "best_score": self.best_score, "best_program": self.best_program, "created_at": self.created_at,
            "state": self.state, "mutator": self.mutator, "bad_files": list(self.bad_files),
        }


def read_problem_view(run_dir: Path, info: dict[str, Any] | None = None) -> ProblemView:
    """The problem as the run saw it: its ``problem.toml`` snapshot, else the folder named in ``run.json``."""
    info = info if info is not None else read_info_quietly(run_dir)
    name = str(info.get("problem") or run_dir.parent.name)
    snapshot = run_dir / PROBLEM_SNAPSHOT
    if snapshot.is_file():
        try:
            return problem_view_from_toml(tomllib.loads(snapshot.read_text(encoding="utf-8")), name)
        except (tomllib.TOMLDecodeError, OSError, TypeError, ValueError, KeyError):
            pass
    root = info.get("problem_root")
    if root:
        try:
            from evolve.openevolve import load_any_problem

            problem, _ = load_any_problem(root)
            return ProblemView(name=problem.name, score_metric=problem.score.metric,
                               direction=problem.score.direction, features=problem.features,
                               language=problem.language)
        except Exception:  # noqa: BLE001 - the folder may have moved or changed; the archive is still readable
            pass
    return ProblemView(name=name)


def problem_view_from_toml(data: dict[str, Any], default_name: str = "") -> ProblemView:
    score = data.get("score") or {}
    features = tuple(
        FeatureDim(name=str(f["name"]), min=float(f["min"]), max=float(f["max"]), bins=int(f["bins"]),
                   metric=str(f.get("metric", "")))
        for f in data.get("features") or []
    )
    language = str(data.get("language") or "")
    if not language:
        from evolve.problem import LANGUAGES

        language = LANGUAGES.get(Path(str(data.get("seed", ""))).suffix, "text")
    return ProblemView(name=str(data.get("name") or default_name), score_metric=str(score.get("metric", "score")),
                       direction=str(score.get("direction", "maximize")), features=features, language=language)


def unravel(cell: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    coords = []
    for size in reversed(shape):
        coords.append(cell % size)
        cell //= size
    return tuple(reversed(coords))


SCORE_REL_TOL = 1e-9  # scores this close are the same score (float noise, e.g. a sum taken in another order)
SCORE_ABS_TOL = 1e-12


def same_score(a: float, b: float) -> bool:
    """Whether two scores differ only by floating-point noise (``+4.4e-16`` is not an improvement)."""
    return math.isclose(a, b, rel_tol=SCORE_REL_TOL, abs_tol=SCORE_ABS_TOL)
