"""What a run records about itself: run.json (settings, state, history), stats.json, the live progress snapshot and
the final summary. A mixin of ``Evolution``, which provides the attributes declared here."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolve.archive import archive_io, write_json_atomic
from evolve.mutators.base import Mutator, ProgramView
from evolve.progress import ProgressSnapshot
from evolve.run_info import PROBLEM_SNAPSHOT, RUN_INFO, RunConfig, RunState, session_entry
from evolve.types import NOT_FAILURES

if TYPE_CHECKING:
    from evolve.database import ProgramDatabase
    from evolve.problem import Problem
    from evolve.records import Child
    from evolve.resume import Lost
    from evolve.schema import ProgramRecord
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


TOP_FAILURES = 3  # failure reasons the live panel shows


@dataclass
class OutcomeNotes:
    """What the driver remembers of integrated rows besides the database: failures by (status, normalised reason)
    and the island the best row was bred on."""

    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    best_key: tuple[float, int, str] | None = None  # the database's order: the smallest key is the best
    best_island: int = 0

    def add(self, record: ProgramRecord) -> None:
        if record.status not in NOT_FAILURES:
            from evolve.failures import failure_message, normalise_message  # not before the first failure

            reason = normalise_message(failure_message({"artifacts": record.artifacts, "stages": record.stages,
                                                        "edit_error": record.edit_error}))
            self.failures[(record.status, reason)] += 1
        if record.fitness is not None:
            key = (-record.fitness, record.iteration, record.program_id)
            if self.best_key is None or key < self.best_key:
                self.best_key, self.best_island = key, record.island

    def top_failures(self, n: int) -> tuple[tuple[str, str, int], ...]:
        return tuple((status, reason, count) for (status, reason), count in self.failures.most_common(n))


class RunReporting:
    """Mixin of ``Evolution``: run.json, stats.json, progress snapshots and the summary.

    ``_note_outcome`` (called by the loop for every integrated row) keeps what the summary and the live panel need
    beyond the database: failures counted by status and normalised reason, and the island the best program was bred
    on (the database knows where elites live now, which migration changes)."""

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

    @property
    def _outcomes(self) -> OutcomeNotes:
        # Started on first use: ``Evolution.__init__`` belongs to the loop.
        notes = self.__dict__.get("_outcome_notes")
        if notes is None:
            notes = self.__dict__["_outcome_notes"] = OutcomeNotes()
        return notes

    def _note_outcome(self, record: ProgramRecord) -> None:
        """Count a failed row's reason; remember where the best row so far was bred."""
        self._outcomes.add(record)

    def _top_failures(self) -> tuple[tuple[str, str, int], ...]:
        """This session's most frequent failure reasons: (status, normalised reason, count)."""
        return self._outcomes.top_failures(TOP_FAILURES)

    def _bred_island(self, best: ProgramView) -> int:
        """The island ``best`` was bred on (what its archive row and ``evolve archive top`` say)."""
        notes = self._outcomes
        if notes.best_key is not None and notes.best_key[2] == best.program_id:
            return notes.best_island
        try:  # the best was found by an earlier session: its row says
            from evolve.query import RunArchive

            with RunArchive(self.run_dir, verify=False) as archive:
                return int(archive.program(best.program_id).island)
        except Exception:  # noqa: BLE001 - an unreadable archive: where it lives now is the best answer left
            return best.island

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
        if self.lost.count or self.lost.files:  # an events file moved aside costs no iteration, but is recorded
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
            failures=self._top_failures(),
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
            "evaluated_this_session": self.evaluated_this_session,
            "top_failures_this_session": [{"status": st, "reason": why, "count": n}
                                          for st, why, n in self._top_failures()],
            "statuses": dict(self.statuses),
            "best_score": best.score if best else None,
            "best_program": best.program_id if best else None,
            "seed_score": self.seed_score,
            "elapsed_seconds_this_session": time.monotonic() - self.started,
            "mutator": self._mutator_stats(),
        }

    def _summary(self) -> RunSummary:
        best = self.db.best()
        if best is not None:
            best = dataclasses.replace(best, island=self._bred_island(best))
        return RunSummary(
            run_dir=self.run_dir,
            run_id=self.run_id,
            stop_reason=self.stop_reason or StopReason.INTERRUPTED,
            message=self.stop_message,
            done=self.done,
            budget=self.settings.iterations,
            best=best,
            seed_score=self.seed_score,
            elapsed=time.monotonic() - self.started,
            statuses=dict(self.statuses),
            mutator_stats=self._mutator_stats(),
            lost=self.lost.count,
            state=self._state,
            notes=tuple(self.notes),
        )
