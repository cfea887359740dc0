"""The steady-state evolution loop (the Ray driver).

The driver keeps a bounded number of programs in flight (mutating or evaluating), integrates each result as it
arrives, and never scans the archive per iteration: parent sampling works on the in-memory MAP-Elites grids and every
result is appended to the archive's journal in O(1). ``deterministic`` mode trades throughput for reproducibility
(``evolve.batches``). Resuming reads and verifies the whole run first (``evolve.resume``). A failed archive write (a
full disk) stops the run cleanly: every row written so far stays readable and the run is marked ``stopped``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evolve.archive import ArchiveIOError, ArchiveWriter, archive_io, write_json_atomic
from evolve.batches import DeterministicBatches
from evolve.breeding import Breeding
from evolve.cluster import cluster_view
from evolve.damage import RunInspection, fingerprint
from evolve.database import AllExcludedError, ProgramDatabase
from evolve.evaluation import split_anomaly
from evolve.mutators.base import (
    MutationOutcome,
    Mutator,
    Proposal,
)
from evolve.oversight.driver import Oversight
from evolve.problem import Problem
from evolve.problem_checks import describe_missing, missing_metrics
from evolve.progress import Progress, QuietProgress
from evolve.records import Child, build_record
from evolve.recovery import accepted_note
from evolve.resume import SEED_ITERATION, BatchReplay, Lost, RunRefused, past_outcomes, restore
from evolve.run_info import STATS_FILE, RunConfig, RunState, read_info_quietly
from evolve.run_report import RunReporting, RunSummary, StopReason
from evolve.schema import ProgramRecord
from evolve.search.settings import SearchSettings
from evolve.settings import RunSettings
from evolve.types import StageOutcome, Status, program_id_for
from evolve.worker import RayStageExecutor, evaluation_seed, system_error

__all__ = ["Child", "Evolution", "RunRefused", "RunSummary", "SeedFailed", "StopReason"]


class SeedFailed(RunRefused):
    """The seed program failed its evaluation; evolution would start from nothing."""

    def __init__(self, outcome: StageOutcome):
        self.outcome = outcome
        details = "\n".join(f"--- {name} ---\n{text}" for name, text in outcome.artifacts.items())
        hint = ""
        if outcome.status is Status.SYSTEM_ERROR:
            hint = " (an infrastructure failure, not the seed's fault: `--resume` evaluates it again)"
        super().__init__(
            f"the seed program failed stage {outcome.stage!r} with status {outcome.status.value}{hint}: "
            f"{outcome.message}\n{details}".rstrip()
        )


class Evolution(Breeding, DeterministicBatches, Oversight, RunReporting):
    """One run of one problem. ``run()`` drives it to a stop and returns a summary.

    On ``resume``: ``accept_damage`` continues over damaged files (moved to ``RUN/damaged/``, their iterations
    recorded as lost); ``more`` sets the budget to what is done plus ``more``; ``overrides`` (setting ->
    ``{"stored", "given"}``) are the flags that changed stored settings, recorded in run.json; ``config`` is what
    run.json keeps to continue the run (``RunConfig``); ``inspection`` a fresh ``inspect_run`` made before (reused
    when the files did not change since); ``search_settings`` the run's ``[search]`` settings when the caller resolved
    them (with its flags) and checked them against ``mutator`` (``check_search``), else None (done here).
    """

    def __init__(
        self,
        problem: Problem,
        settings: RunSettings,
        mutator: Mutator,
        run_dir: Path,
        run_id: str,
        *,
        resume: bool = False,
        progress: Progress | None = None,
        sandbox_settings: Any = None,
        executor: RayStageExecutor | None = None,
        accept_damage: bool = False,
        more: int | None = None,
        overrides: Mapping[str, Any] | None = None,
        config: RunConfig | None = None,
        inspection: RunInspection | None = None,
        resume_command: str = "",
        search_settings: SearchSettings | None = None,
    ):
        self.problem = problem
        self.settings = settings
        self.mutator = mutator
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.resume = resume
        self.accept_damage = accept_damage
        self.more = more
        self.overrides = dict(overrides or {})
        self.config = config
        self.inspection = inspection
        self.resume_command = resume_command or f"evolve run {problem.root} --resume --run-dir {self.run_dir}"
        self.progress = progress or QuietProgress()
        self.executor = executor or RayStageExecutor(problem, sandbox_settings)
        self.db = ProgramDatabase(settings.islands, problem.grid_shape, settings.exploitation)
        self.sign = problem.score.sign
        self.statuses: Counter[str] = Counter()
        self.duplicates = 0
        self.done = 0  # iterations finished (and lost to accepted damage), this session and before
        self.next_iteration = 1
        self.seed_score: float | None = None
        self.lost = Lost()
        self.jobs: dict[Any, Child] = {}  # ray ref -> child being evaluated
        self.mutations: dict[cf.Future[tuple[Proposal, float]], Child] = {}
        self.in_flight_ids: set[str] = set()
        self.since_migration = 0
        self.batch: list[Child] = []  # deterministic mode: the current batch, in iteration order
        self.queue: list[Child] = []  # children ready to submit (deterministic mode)
        self.replay: BatchReplay | None = None  # deterministic resume: the torn batch being completed
        self.stop_reason: StopReason | None = None
        self.stop_message = ""
        self.failure = ""  # why the run never got going (a failed seed)
        self.io_error: ArchiveIOError | None = None
        self.started = time.monotonic()
        self.evaluated_this_session = 0
        concurrency = getattr(mutator, "max_concurrency", 0)
        self.pool = cf.ThreadPoolExecutor(max_workers=concurrency) if concurrency else None
        self.writer: ArchiveWriter | None = None
        self._concurrency = settings.concurrency
        self.edit_mode = getattr(mutator, "edit_mode", "diff")
        self._concurrency_checked = -1e9
        self._started = False  # set once run.json belongs to this session; a refused resume leaves it untouched
        self._info: dict[str, Any] = {}
        self._state = ""
        self._accepted: list[Any] = []
        self.notes: list[str] = []  # what the resume found and did, for the summary
        self._created_dir = False
        self.search_settings = search_settings
        self._init_steering()
        self._init_oversight()

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> RunSummary:
        try:
            self._open()
            for note in getattr(self.mutator, "notes", ()) or ():
                self.progress.message(f"note: {note}")
            if self.resume:
                self._restore()
            else:
                self._write_run_info(RunState.RUNNING)
            self._started = True
            if self.db.best() is None:
                # Nothing to evolve from yet: a new run, or a resumed one killed before its seed was recorded.
                self._evaluate_seed()
            self._loop()
        except KeyboardInterrupt:
            self._stop(StopReason.INTERRUPTED, "interrupted by the user")
        except ArchiveIOError as exc:
            self._io_failed(exc)
        except SeedFailed as exc:
            self.failure = str(exc).splitlines()[0]
            raise
        except AllExcludedError as exc:
            raise RunRefused(f"{exc}: release one (evolve archive release {self.run_dir} PROGRAM --by NAME), then "
                             "resume, or start a new run") from None
        finally:
            self._shutdown()
        return self._summary()

    def _open(self) -> None:
        self._created_dir = not self.run_dir.exists()
        with archive_io(self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._info = read_info_quietly(self.run_dir) if self.resume else {}
        # On resume the journals are left as they are until the run has been inspected and the resume accepted.
        self.writer = ArchiveWriter(self.run_dir, self.run_id, segment_rows=self.settings.segment_rows,
                                    flush_seconds=self.settings.flush_seconds, recover=not self.resume)

    def _fresh_inspection(self) -> RunInspection | None:
        inspection = self.inspection
        if inspection is not None and inspection.fingerprint == fingerprint(self.run_dir):
            return inspection
        return None

    def _restore(self) -> None:
        """Rebuild the database from the archive (see ``evolve.resume``); refuse without changing anything."""
        state = restore(self.run_dir, self.problem, self.settings, self._info, self._fresh_inspection(),
                        self.accept_damage, self.resume_command)
        if "iterations" in self.overrides and self.settings.iterations < state.done:
            raise RunRefused(f"cannot resume {self.run_dir}: --iterations is the run's total budget, and "
                             f"{state.done} iterations are already done; pass a larger total or --more N to run N "
                             "more")
        inspection = state.inspection
        accepted = inspection if inspection is not None and inspection.damage else None
        self._accepted = state.accepted if accepted is not None else []
        session = int(self._info.get("sessions", 0) or 0) + 1
        recovery = self._writer().recover(accepted, accepted_note(session, self.run_id))
        self.db, self.done, self.next_iteration = state.db, state.done, state.next_iteration
        self.statuses, self.seed_score, self.lost, self.replay = state.statuses, state.seed_score, state.lost, \
            state.replay
        if self.more is not None:
            self.settings = dataclasses.replace(self.settings, iterations=self.done + self.more)
        restore_llm = getattr(self.mutator, "restore", None)
        if restore_llm is not None and state.llm_records:
            # Budgets (calls, tokens, cost) cover the whole run, not just this session.
            restore_llm(state.llm_records)
        if getattr(self.mutator, "observe", None) is not None:
            # What a learning mutator had learned, replayed in iteration order (as deterministic mode integrates).
            for proposal, outcome in past_outcomes(state):
                self._observe_proposal(proposal, outcome)
        self.since_migration = self.done % self.settings.migration_interval
        self._write_run_info(RunState.RUNNING)
        self.notes = list(state.notes)
        if recovery.quarantined:
            self.notes.append(f"moved to {self.run_dir / 'damaged'}: {', '.join(recovery.quarantined)}")
        for note in self.notes:
            self.progress.message(f"note: {note}")
        self.progress.message(
            f"resuming {self.run_dir}: {self.done} of {self.settings.iterations} iterations done "
            f"({max(0, self.settings.iterations - self.done)} to go; the budget is the run's total: --iterations N "
            "sets it, --more N adds N)")
        if self.db.best() is not None:
            self._seed_islands()
        if state.oversight is not None:
            self._restore_oversight(state.oversight.state, state.oversight.subjects, state.oversight.jump_fitness)

    def _io_failed(self, exc: ArchiveIOError) -> None:
        if self.io_error is None:
            self.io_error = exc
        self._stop(StopReason.DISK_FULL if exc.disk_full else StopReason.IO_ERROR, exc.one_line())

    def _shutdown(self) -> None:
        failed = self.io_error is not None or (self.writer is not None and self.writer.failure is not None)
        if self._started and self.writer is not None and not failed:
            try:
                self._flush_batch()
            except ArchiveIOError as exc:
                self._io_failed(exc)
        # In-flight evaluations are abandoned, not cancelled: they end with this driver's Ray job (and each is
        # bounded by its stage deadline). Force-cancelling them raced with their replies and crashed Ray 2.60's
        # core worker on Ctrl-C ("Tried to complete task that was not pending").
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.mutator, "close", None)
        if close is not None:
            close()
        if self.writer is not None:
            if self.writer.failure is not None:
                self._io_failed(self.writer.failure)
            try:
                # After a failed write the rows are all in the journal; the space goes to run.json instead.
                self.writer.close(flush=self.io_error is None)
            except ArchiveIOError as exc:
                self._io_failed(exc)
        if not self._started:
            if self._created_dir:
                _remove_skeleton(self.run_dir)  # a failed start leaves nothing that looks like a run
            self.progress.close()
            return
        if self.db.best() is None:
            state = RunState.FAILED_START
        elif self.stop_reason in (StopReason.BUDGET, StopReason.TARGET):
            state = RunState.FINISHED
        else:
            state = RunState.STOPPED
        try:
            self._write_run_info(state)
            with archive_io(self.run_dir / STATS_FILE):
                write_json_atomic(self.run_dir / STATS_FILE, self._stats())
        except ArchiveIOError as exc:
            self.progress.message(f"could not record the run's final state: {exc.one_line()}")
        self.progress.update(self._snapshot(), force=True)
        self.progress.close()

    # ------------------------------------------------------------------ seed
    def _evaluate_seed(self) -> None:
        code = self.problem.seed_code()
        child = Child(iteration=SEED_ITERATION, island=0, parent=None, code=code, program_id=program_id_for(code))
        if child.program_id in self.db:
            raise SeedFailed(StageOutcome(
                stage="seed", status=Status.REJECTED,
                message="this run's seed program already failed its evaluation; fix the seed and start a new run"))
        self.progress.message(f"evaluating the seed program {child.program_id}")
        self._submit(child)
        while self.jobs and self.stop_reason is None:
            self._check_limits()
            self._collect(timeout=1.0)
        record = child.record
        assert record is not None or self.stop_reason is not None
        if record is None:
            return
        if record.status != Status.OK.value:
            outcome = child.outcomes[-1]
            if outcome.passed:  # every stage passed, but the result cannot be placed (no finite score, ...)
                missing = missing_metrics(self.problem, record.metrics)
                if missing:
                    raise RunRefused("the seed passed every stage, but problem.toml names metrics its evaluator "
                                     "does not return:\n" + describe_missing(missing, record.metrics))
                outcome = dataclasses.replace(outcome, status=Status(record.status),
                                              message=record.artifacts.get("message", ""), artifacts={})
            raise SeedFailed(outcome)
        self.seed_score = record.score
        self._seed_islands()
        self.progress.message(f"seed score {record.score}")

    def _seed_islands(self) -> None:
        """Give every empty island the best program so far (the seed, at the start of a run).

        Recorded as migrations so a resumed run rebuilds the same grids; after a kill between the seed's row and
        these copies, the resumed run finishes the job.
        """
        best = self.db.best()
        assert best is not None
        for island, elites in enumerate(self.db.stats().elites_per_island):
            if island != best.island and elites == 0:
                self.db.place(best.program_id, island)
                self._writer().record_migration(best.program_id, best.island, island, SEED_ITERATION)

    # ------------------------------------------------------------------ main loop
    def _loop(self) -> None:
        while self.stop_reason is None:
            self._check_limits()
            if self.stop_reason is not None:
                break
            if self.settings.deterministic:
                if self.batch or not self._oversight_busy():  # a new batch waits for the checks' verdicts
                    self._fill_deterministic()
            elif not self._waiting_for_parents():
                self._fill()
            if not self.jobs and not self.mutations and not self.queue and not self._oversight_busy():
                if self.done >= self.settings.iterations:
                    self._stop(StopReason.BUDGET, f"all {self.settings.iterations} iterations done")
                    break
                if self.settings.deterministic and self.batch:
                    continue
            self._collect(timeout=0.2)
            self.progress.update(self._snapshot())
        if self.stop_reason is StopReason.MUTATOR:
            self._drain()

    def _drain(self) -> None:
        """After the mutator stopped (a budget reached), finish the children whose answers were already paid for."""
        while (self.jobs or self.mutations or self.queue) and self.io_error is None:
            while self.queue:
                self._submit(self.queue.pop(0))
            self._collect(timeout=0.2)
            self._check_writer()
            self.progress.update(self._snapshot())

    @property
    def concurrency(self) -> int:  # type: ignore[override]
        """The in-flight bound; with ``concurrency=0`` it follows the cluster as nodes join and leave."""
        if self.settings.concurrency > 0:
            return self.settings.concurrency
        now = time.monotonic()
        if now - self._concurrency_checked > 5.0:
            self._concurrency_checked = now
            self._concurrency = cluster_view().default_concurrency()
        return self._concurrency

    # ------------------------------------------------------------------ evaluation
    def _submit(self, child: Child) -> None:
        self.in_flight_ids.add(child.program_id)
        seed = evaluation_seed(self.settings.seed, child.program_id)
        ref = self.executor.submit(child.stage_index, child.code, child.program_id, seed)
        child.attempts += 1
        self.jobs[ref] = child

    def _collect(self, timeout: float) -> None:
        if self.mutations:
            done, _ = cf.wait(list(self.mutations), timeout=0 if self.jobs else timeout,
                              return_when=cf.FIRST_COMPLETED)
            for future in done:
                child = self.mutations.pop(future)
                # After a stop, answers that did arrive are still used (they were paid for).
                self._on_proposal(child, self._take_proposal(child, future.result))
            if done:
                return
        for ref in self.executor.wait([*self.jobs, *self.check_refs], timeout if not self.mutations else 0.02):
            if ref in self.check_refs:
                self._on_check_stage(ref)
                continue
            child = self.jobs.pop(ref)
            outcome = self.executor.result(ref, child.stage_index)
            if outcome is None:
                if child.attempts <= self.settings.max_system_retries:
                    self.progress.message(f"evaluation of {child.program_id} lost to a system failure; resubmitting")
                    self._submit(child)
                    continue
                outcome = system_error(self.problem.stages[child.stage_index], child.attempts)
            self._on_stage(child, outcome)

    def _on_stage(self, child: Child, outcome: StageOutcome) -> None:
        outcome, anomaly = split_anomaly(outcome)
        if anomaly:
            self._on_anomaly(child, outcome.stage, anomaly)
        child.outcomes.append(outcome)
        if outcome.passed and child.stage_index + 1 < len(self.problem.stages):
            child.stage_index += 1
            child.attempts = 0
            self._submit(child)
            return
        self._finish(child)

    def _finish(self, child: Child) -> None:
        record = build_record(self.problem, child, self.run_id, getattr(self.mutator, "name", ""))
        child.record = record
        self.in_flight_ids.discard(child.program_id)
        if child.iteration == SEED_ITERATION and record.status == Status.SYSTEM_ERROR.value:
            return  # not the seed's fault: leave no row, so that a resume evaluates it again
        if self.settings.deterministic and child.iteration != SEED_ITERATION:
            return  # integrated with its batch, in order
        self._integrate(child, record)

    def _append(self, child: Child, record: ProgramRecord) -> None:
        """Write a row without integrating it (deterministic mode, after a stop: see ``_flush_batch``)."""
        if not child.replayed:
            self._writer().append(record)
        self.statuses[record.status] += 1
        self.done += 1

    def _integrate(self, child: Child, record: ProgramRecord) -> None:
        if not child.replayed:  # a replayed child's row is already in the archive
            self._writer().append(record)
        self.db.add(record)
        self.statuses[record.status] += 1
        self._note_outcome(record)  # failure reasons for the live panel, the best's island for the summary
        if child.code and not child.replayed:  # not an unusable answer, a duplicate or an iteration without answer
            self.evaluated_this_session += 1
        self._oversee(child, record)  # tripwires, held-out check; the target counts once a program is promoted
        if child.iteration == SEED_ITERATION:
            return
        self.done += 1
        parent = child.parent
        if child.proposal is not None and parent is not None:
            self._observe(child, MutationOutcome(record.status, self._fitness_of(parent), record.fitness,
                                                 child.edit_error))
        self.since_migration += 1
        if self.settings.islands > 1 and self.since_migration >= self.settings.migration_interval:
            self.since_migration = 0
            written = self.replay.migration_keys if self.replay is not None else frozenset()
            for migration in self.db.migrate(child.iteration):
                key = (migration.program_id, migration.from_island, migration.to_island, child.iteration)
                if key not in written:
                    self._writer().record_migration(migration.program_id, migration.from_island,
                                                    migration.to_island, child.iteration)

    def _check_target(self, score: float | None, program_id: str = "") -> None:
        """Called when a program is promoted: the target counts only for programs oversight trusts."""
        target = self.settings.target_score
        if target is not None and score is not None and score * self.sign >= target * self.sign:
            self._stop(StopReason.TARGET, f"target score {target} reached by {program_id} (promoted)")

    def _observe(self, child: Child, outcome: MutationOutcome) -> None:
        if child.proposal is not None:
            self._observe_proposal(child.proposal, outcome)

    def _observe_proposal(self, proposal: Proposal, outcome: MutationOutcome) -> None:
        observe = getattr(self.mutator, "observe", None)
        if observe is not None:
            try:
                observe(proposal, outcome)
            except Exception as exc:  # noqa: BLE001 - feedback must never stop a run
                self.progress.message(f"mutator feedback failed: {exc}")

    # ------------------------------------------------------------------ stopping and reporting
    def _check_limits(self) -> None:
        self._check_writer()
        limit = self.settings.time_limit
        if limit is not None and time.monotonic() - self.started >= limit:
            self._stop(StopReason.TIME_LIMIT, f"time limit of {limit:g} s reached")

    def _check_writer(self) -> None:
        if self.writer is not None and self.writer.failure is not None:
            self._io_failed(self.writer.failure)

    def _stop(self, reason: StopReason, message: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message

    def _writer(self) -> ArchiveWriter:
        assert self.writer is not None
        return self.writer

def _remove_skeleton(run_dir: Path) -> None:
    """Undo what a new run made before failing to start: its lock, its reserve and empty folders (``rmdir`` never
    removes a folder holding anything)."""
    for name in ("journal/.lock", ".reserve"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink()
    for path in (run_dir / "segments", run_dir / "migrations", run_dir / "journal", run_dir):
        with contextlib.suppress(OSError):
            path.rmdir()
