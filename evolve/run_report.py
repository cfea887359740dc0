"""What a run records about itself: run.json (settings, state, history), stats.json, the live progress snapshot and
the final summary. A mixin of ``Evolution``, which provides the attributes declared here."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolve.archive import archive_io, write_json_atomic
from evolve.mutators.base import Mutator, ProgramView
from evolve.progress import ProgressSnapshot
from evolve.run_info import PROBLEM_SNAPSHOT, RUN_INFO, RunConfig, RunState, session_entry

if TYPE_CHECKING:
    from evolve.database import ProgramDatabase
    from evolve.problem import Problem
    from evolve.records import Child
    from evolve.resume import Lost
    from evolve.settings import RunSettings


class StopReason(StrEnum):
    BUDGET = "budget"  # every iteration done
    TIME_LIMIT = "time_limit"
    TARGET = "target_score"
    MUTATOR = "mutator_stopped"  # LLM budget reached or endpoint down
    INTERRUPTED = "interrupted"
    DISK_FULL = "disk_full"  # an archive write found no space: stopped cleanly, resumable once space is freed
    IO_ERROR = "io_error"  # another archive write failure


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    run_id: str
    stop_reason: StopReason
    message: str
    done: int
    budget: int
    best: ProgramView | None
    seed_score: float | None
    elapsed: float
    statuses: dict[str, int]
    mutator_stats: dict[str, Any]
    lost: int = 0  # iterations lost to accepted damage (counted in ``done``)
    state: str = ""  # what run.json says now: finished, stopped, failed_start (empty if never started)
    notes: tuple[str, ...] = ()  # what the resume found and did (torn journal tails, damage accepted, ...)


class RunReporting:
    """Mixin of ``Evolution``: run.json, stats.json, progress snapshots and the summary."""

    problem: Problem
    settings: RunSettings
    mutator: Mutator
    run_dir: Path
    run_id: str
    resume: bool
    overrides: dict[str, Any]
    config: RunConfig | None
    db: ProgramDatabase
    done: int
    next_iteration: int
    statuses: Counter[str]
    duplicates: int
    seed_score: float | None
    lost: Lost
    jobs: dict[Any, Child]
    mutations: dict[Any, Child]
    stop_reason: StopReason | None
    stop_message: str
    failure: str
    started: float
    evaluated_this_session: int
    _info: dict[str, Any]
    _state: str
    _accepted: list[Any]
    notes: list[str]

    def _write_run_info(self, state: RunState) -> None:
        info = dict(self._info)
        first = not info
        sessions = int(info.get("sessions", 0) or 0) + (1 if state is RunState.RUNNING else 0)
        info.update({
            "run_id": self.run_id,
            "problem": self.problem.name,
            "problem_root": str(self.problem.root),
            "settings": self.settings.to_dict(),
            "mutator": getattr(self.mutator, "name", type(self.mutator).__name__),
            "state": state.value,
            "created_at": info.get("created_at", time.time()),
            "sessions": max(1, sessions),
            "next_iteration": self.next_iteration,
        })
        if self.config is not None:
            info.update(self.config.to_info())
        if state is RunState.RUNNING:
            history = list(info.get("history") or [])
            history.append(session_entry(info["sessions"], self.overrides, resumed=self.resume,
                                         accepted_damage=[d.file for d in self._accepted]))
            info["history"] = history
        else:
            info["stop_reason"] = self.stop_reason.value if self.stop_reason else None
            info["stop_message"] = self.stop_message
            if self.failure:
                info["failure"] = self.failure
        if self.lost.count:
            info["lost"] = self.lost.to_info()
        with archive_io(self.run_dir / RUN_INFO):
            if first:
                self._snapshot_problem()
            write_json_atomic(self.run_dir / RUN_INFO, info)
        self._info = info
        self._state = state.value

    def _snapshot_problem(self) -> None:
        source = self.problem.root / "problem.toml"
        target = self.run_dir / PROBLEM_SNAPSHOT
        if target.exists():
            return
        if source.exists():
            shutil.copyfile(source, target)
        else:  # an OpenEvolve-format folder: keep the definition it was mapped to
            from evolve.openevolve import openevolve_problem_toml

            target.write_text(openevolve_problem_toml(self.problem.root))

    def _snapshot(self) -> ProgressSnapshot:
        best = self.db.best()
        elapsed = time.monotonic() - self.started
        in_flight: Counter[str] = Counter()
        for child in self.jobs.values():
            in_flight[self.problem.stages[child.stage_index].name] += 1
        if self.mutations:
            in_flight["mutating"] = len(self.mutations)
        stats = self.db.stats()
        mutator_stats = self._mutator_stats()
        return ProgressSnapshot(
            elapsed=elapsed,
            done=min(self.done, self.settings.iterations),
            budget=self.settings.iterations,
            best_score=best.score if best else None,
            best_program=best.program_id if best else None,
            evals_per_second=self.evaluated_this_session / elapsed if elapsed > 0 else 0.0,
            in_flight=dict(in_flight),
            statuses=dict(self.statuses),
            duplicates=self.duplicates,
            coverage=dict(enumerate(stats.coverage_per_island)),
            time_limit=self.settings.time_limit,
            llm=mutator_stats.get("totals", {}) if isinstance(mutator_stats.get("totals"), dict) else {},
        )

    def _mutator_stats(self) -> dict[str, Any]:
        stats = getattr(self.mutator, "stats", None)
        try:
            return dict(stats()) if stats is not None else {}
        except Exception:  # noqa: BLE001
            return {}

    def _stats(self) -> dict[str, Any]:
        best = self.db.best()
        return {
            "run_id": self.run_id,
            "state": self._state,
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "stop_message": self.stop_message,
            "done": self.done,
            "budget": self.settings.iterations,
            "lost": self.lost.to_info(),
            "duplicates_this_session": self.duplicates,
            "statuses": dict(self.statuses),
            "best_score": best.score if best else None,
            "best_program": best.program_id if best else None,
            "seed_score": self.seed_score,
            "elapsed_seconds_this_session": time.monotonic() - self.started,
            "mutator": self._mutator_stats(),
        }

    def _summary(self) -> RunSummary:
        return RunSummary(
            run_dir=self.run_dir,
            run_id=self.run_id,
            stop_reason=self.stop_reason or StopReason.INTERRUPTED,
            message=self.stop_message,
            done=self.done,
            budget=self.settings.iterations,
            best=self.db.best(),
            seed_score=self.seed_score,
            elapsed=time.monotonic() - self.started,
            statuses=dict(self.statuses),
            mutator_stats=self._mutator_stats(),
            lost=self.lost.count,
            state=self._state,
            notes=tuple(self.notes),
        )
