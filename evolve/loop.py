"""The steady-state evolution loop (the Ray driver).

The driver keeps a bounded number of programs in flight (mutating or evaluating), integrates each result as it
arrives, and never scans the archive per iteration: parent sampling works on the in-memory MAP-Elites grids and every
result is appended to the archive's journal in O(1). ``deterministic`` mode trades throughput for reproducibility:
children are made in fixed-size batches from the state after the previous batch and integrated in submission order.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from evolve.archive import ArchiveWriter, read_migrations, read_programs, write_json_atomic
from evolve.cluster import cluster_view
from evolve.database import ProgramDatabase, cell_of
from evolve.edits import apply_response
from evolve.evaluation import feature_values
from evolve.mutators.base import (
    MutationOutcome,
    MutationRequest,
    Mutator,
    MutatorStopped,
    ProgramView,
    Proposal,
)
from evolve.problem import Problem
from evolve.progress import Progress, ProgressSnapshot, QuietProgress
from evolve.schema import ProgramRecord
from evolve.settings import RunSettings
from evolve.types import StageOutcome, Status, program_id_for
from evolve.worker import RayStageExecutor, evaluation_seed, system_error

SEED_ITERATION = 0


class StopReason(StrEnum):
    BUDGET = "budget"  # every iteration done
    TIME_LIMIT = "time_limit"
    TARGET = "target_score"
    MUTATOR = "mutator_stopped"  # LLM budget reached or endpoint down
    INTERRUPTED = "interrupted"


class RunRefused(RuntimeError):
    """The run cannot start or continue as asked; nothing was changed."""


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


@dataclass
class Child:
    """One iteration in progress: from mutation to its final record."""

    iteration: int
    island: int
    parent: ProgramView | None
    inspirations: tuple[str, ...] = ()
    request: MutationRequest | None = None
    proposal: Proposal | None = None
    code: str = ""
    program_id: str = ""
    edit_error: str = ""
    mutate_seconds: float = 0.0
    stage_index: int = 0
    outcomes: list[StageOutcome] = field(default_factory=list)
    attempts: int = 0
    record: ProgramRecord | None = None


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


class Evolution:
    """One run of one problem. ``run()`` drives it to a stop and returns a summary."""

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
    ):
        self.problem = problem
        self.settings = settings
        self.mutator = mutator
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.resume = resume
        self.progress = progress or QuietProgress()
        self.executor = executor or RayStageExecutor(problem, sandbox_settings)
        self.db = ProgramDatabase(settings.islands, problem.grid_shape, settings.exploitation)
        self.sign = problem.score.sign
        self.statuses: Counter[str] = Counter()
        self.duplicates = 0
        self.done = 0  # iterations finished, this session and before
        self.next_iteration = 1
        self.seed_score: float | None = None
        self.jobs: dict[Any, Child] = {}  # ray ref -> child being evaluated
        self.mutations: dict[cf.Future[Proposal], Child] = {}
        self.in_flight_ids: set[str] = set()
        self.since_migration = 0
        self.batch: list[Child] = []  # deterministic mode: the current batch, in iteration order
        self.queue: list[Child] = []  # children ready to submit (deterministic mode)
        self.stop_reason: StopReason | None = None
        self.stop_message = ""
        self.started = time.monotonic()
        self.evaluated_this_session = 0
        concurrency = getattr(mutator, "max_concurrency", 0)
        self.pool = cf.ThreadPoolExecutor(max_workers=concurrency) if concurrency else None
        self.writer: ArchiveWriter | None = None
        self._concurrency = settings.concurrency
        self.edit_mode = getattr(mutator, "edit_mode", "diff")
        self._concurrency_checked = -1e9
        self._started = False  # set once run.json belongs to this session; a refused resume leaves it untouched

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> RunSummary:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = ArchiveWriter(self.run_dir, self.run_id, segment_rows=self.settings.segment_rows,
                                    flush_seconds=self.settings.flush_seconds)
        for note in getattr(self.mutator, "notes", ()) or ():
            self.progress.message(f"note: {note}")
        try:
            if self.resume:
                self._restore()
            else:
                self._write_run_info("running")
            self._started = True
            if self.db.best() is None:
                # Nothing to evolve from yet: a new run, or a resumed one killed before its seed was recorded.
                self._evaluate_seed()
            self._loop()
        except KeyboardInterrupt:
            self._stop(StopReason.INTERRUPTED, "interrupted by the user")
        finally:
            self._shutdown()
        return self._summary()

    def _write_run_info(self, state: str) -> None:
        info = {
            "run_id": self.run_id,
            "problem": self.problem.name,
            "problem_root": str(self.problem.root),
            "settings": self.settings.to_dict(),
            "mutator": getattr(self.mutator, "name", type(self.mutator).__name__),
            "state": state,
            "created_at": time.time(),
        }
        path = self.run_dir / "run.json"
        if path.exists():
            old = json.loads(path.read_text())
            info["created_at"] = old.get("created_at", info["created_at"])
            info["sessions"] = old.get("sessions", 1) + (1 if state == "running" else 0)
        else:
            info["sessions"] = 1
            self._snapshot_problem()
        write_json_atomic(path, info)

    def _snapshot_problem(self) -> None:
        source = self.problem.root / "problem.toml"
        if source.exists():
            shutil.copyfile(source, self.run_dir / "problem.toml")
        else:  # an OpenEvolve-format folder: keep the definition it was mapped to
            from evolve.openevolve import openevolve_problem_toml

            (self.run_dir / "problem.toml").write_text(openevolve_problem_toml(self.problem.root))

    def _restore(self) -> None:
        """Rebuild the database from the archive; continue numbering after the last recorded iteration."""
        programs = read_programs(self.run_dir).table
        try:
            self.db = ProgramDatabase.rebuild(programs, read_migrations(self.run_dir),
                                              n_islands=self.settings.islands, grid_shape=self.problem.grid_shape,
                                              exploitation=self.settings.exploitation)
        except ValueError as exc:
            raise RunRefused(f"cannot resume {self.run_dir}: {exc}. The number of islands or the problem's feature "
                             "grid changed since the run started; resume with the run's own settings or start a "
                             "new run") from None
        if programs.num_rows:
            iterations = programs.column("iteration").to_pylist()
            statuses = programs.column("status").to_pylist()
            self.next_iteration = max(iterations) + 1
            self.done = sum(1 for i in iterations if i != SEED_ITERATION)
            self.statuses.update(statuses)
            for it, status, score in zip(iterations, statuses, programs.column("score").to_pylist(), strict=True):
                if it == SEED_ITERATION and status == Status.OK.value:
                    self.seed_score = score
        restore = getattr(self.mutator, "restore", None)
        if restore is not None and programs.num_rows and "llm" in programs.column_names:
            # Budgets (calls, tokens, cost) cover the whole run, not just this session.
            restore([json.loads(text) for text in programs.column("llm").to_pylist() if text and text != "{}"])
        self.since_migration = self.done % self.settings.migration_interval
        self._write_run_info("running")
        self.progress.message(f"resuming {self.run_dir}: {self.done} iterations already recorded")
        if self.db.best() is not None:
            self._seed_islands()

    def _shutdown(self) -> None:
        if self._started and self.writer is not None:
            self._flush_batch()
        # In-flight evaluations are abandoned, not cancelled: they end with this driver's Ray job (and each is
        # bounded by its stage deadline). Force-cancelling them raced with their replies and crashed Ray 2.60's
        # core worker on Ctrl-C ("Tried to complete task that was not pending").
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.mutator, "close", None)
        if close is not None:
            close()
        if self.writer is not None:
            self.writer.close()
        if not self._started:
            self.progress.close()
            return
        state = "finished" if self.stop_reason in (StopReason.BUDGET, StopReason.TARGET) else "stopped"
        self._write_run_info(state)
        stats = self._stats()
        write_json_atomic(self.run_dir / "stats.json", stats)
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
                self._fill_deterministic()
            else:
                self._fill()
            if not self.jobs and not self.mutations and not self.queue:
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
        while self.jobs or self.mutations or self.queue:
            while self.queue:
                self._submit(self.queue.pop(0))
            self._collect(timeout=0.2)
            self.progress.update(self._snapshot())
        self._flush_batch()

    def _flush_batch(self) -> None:
        """Deterministic mode: integrate the batch's finished children, in iteration order (all of them, or those
        that finished before a stop)."""
        for child in self.batch:
            if child.record is not None:
                self._integrate(child, child.record)
        self.batch = []

    @property
    def concurrency(self) -> int:
        """The in-flight bound; with ``concurrency=0`` it follows the cluster as nodes join and leave."""
        if self.settings.concurrency > 0:
            return self.settings.concurrency
        now = time.monotonic()
        if now - self._concurrency_checked > 5.0:
            self._concurrency_checked = now
            self._concurrency = cluster_view().default_concurrency()
        return self._concurrency

    def _in_flight(self) -> int:
        return len(self.jobs) + len(self.mutations) + len(self.queue)

    def _fill(self) -> None:
        while self._in_flight() < self.concurrency and self._can_start():
            child = self._new_child()
            self._mutate(child)
            if self.stop_reason is not None:
                return

    def _can_start(self) -> bool:
        return self.done + self._in_flight() < self.settings.iterations

    def _new_child(self) -> Child:
        iteration = self.next_iteration
        self.next_iteration += 1
        island = iteration % self.settings.islands
        rng = np.random.default_rng([self.settings.seed, iteration])
        parent = self.db.sample_parent(island, rng)
        inspirations = self.db.inspirations(island, self.settings.inspirations, rng, exclude=parent.program_id)
        child = Child(iteration=iteration, island=island, parent=parent,
                      inspirations=tuple(p.program_id for p in inspirations))
        child.request = MutationRequest(
            parent=parent,
            iteration=iteration,
            seed=int(rng.integers(2**63 - 1)),
            language=self.problem.language,
            description=self.problem.description,
            score_metric=self.problem.score.metric,
            score_direction=self.problem.score.direction,
            inspirations=inspirations,
            attempts=self.db.attempts(parent.program_id),
        )
        return child

    def _mutate(self, child: Child) -> None:
        request = child.request
        assert request is not None
        if self.pool is not None:
            future = self.pool.submit(self._timed_propose, request)
            self.mutations[future] = child
            return
        self._on_proposal(child, self._take_proposal(child, lambda: self._timed_propose(request)))

    def _timed_propose(self, request: MutationRequest) -> tuple[Proposal, float]:
        start = time.monotonic()
        return self.mutator.propose(request), time.monotonic() - start

    def _take_proposal(self, child: Child, get: Callable[[], tuple[Proposal, float]]) -> Proposal | None:
        """Run (or collect) one mutation: a stopped mutator stops the run; any other failure is the child's."""
        try:
            proposal, child.mutate_seconds = get()
            return proposal
        except MutatorStopped as exc:
            self._stop(StopReason.MUTATOR, str(exc))
        except Exception as exc:  # noqa: BLE001 - a failing mutator call is recorded, not fatal
            child.edit_error = f"mutator raised {type(exc).__name__}: {exc}"
        return None

    def _on_proposal(self, child: Child, proposal: Proposal | None) -> None:
        if self.stop_reason is not None and proposal is None and not child.edit_error:
            return
        assert child.parent is not None
        child.proposal = proposal
        if proposal is not None:
            if proposal.child_code is not None:
                child.code = proposal.child_code
            elif proposal.llm.get("error") or proposal.llm.get("edit_error"):
                # The mutator already knows why there is no child (a failed call, an answer it could not apply).
                child.edit_error = str(proposal.llm.get("error") or proposal.llm.get("edit_error"))
            else:
                result = apply_response(child.parent.code, proposal.response, self.edit_mode)
                if result.ok:
                    child.code = result.unwrap()
                else:
                    reason = result.reason.value if result.reason else "rejected"
                    child.edit_error = f"{reason}: {result.message}"
        if not child.code:
            answer = proposal.response if proposal else ""
            child.program_id = program_id_for(f"invalid-edit:{child.parent.program_id}:{child.iteration}:{answer}")
            child.outcomes.append(StageOutcome(stage="edit", status=Status.INVALID_EDIT, message=child.edit_error))
            self._finish(child)
            return
        child.program_id = program_id_for(child.code)
        if child.program_id in self.db or child.program_id in self.in_flight_ids:
            # Not evaluated again, but recorded: the iteration (and any LLM call behind it) counts on resume.
            self.duplicates += 1
            twin = child.program_id
            child.edit_error = f"identical to program {twin} (already archived or being evaluated)"
            child.code = ""
            child.program_id = program_id_for(f"duplicate:{child.parent.program_id}:{child.iteration}:{twin}")
            child.outcomes.append(StageOutcome(stage="edit", status=Status.DUPLICATE, message=child.edit_error))
            self._finish(child)
            return
        if self.settings.deterministic:
            self.in_flight_ids.add(child.program_id)
            self.queue.append(child)
        else:
            self._submit(child)

    def _fitness_of(self, view: ProgramView) -> float | None:
        return None if view.score is None else view.score * self.sign

    # ------------------------------------------------------------------ deterministic batches
    def _fill_deterministic(self) -> None:
        if not self.batch:
            size = min(self.settings.batch_size, self.settings.iterations - self.done)
            for _ in range(max(0, size)):
                child = self._new_child()
                self.batch.append(child)
            # Proposals come from the same database state whatever the concurrency, and are used in iteration
            # order; a pooled (LLM) mutator answers the whole batch at once.
            futures = {}
            if self.pool is not None:
                futures = {id(c): self.pool.submit(self._timed_propose, c.request) for c in self.batch}
            for child in list(self.batch):
                request = child.request
                assert request is not None
                get = futures[id(child)].result if futures else (lambda r=request: self._timed_propose(r))
                proposal = self._take_proposal(child, get)
                if self.stop_reason is not None:
                    return
                self._on_proposal(child, proposal)
        while self.queue and len(self.jobs) < self.concurrency:
            self._submit(self.queue.pop(0))
        if self.batch and all(c.record is not None for c in self.batch):
            self._flush_batch()

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
        for ref in self.executor.wait(list(self.jobs), timeout if not self.mutations else 0.02):
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
        child.outcomes.append(outcome)
        if outcome.passed and child.stage_index + 1 < len(self.problem.stages):
            child.stage_index += 1
            child.attempts = 0
            self._submit(child)
            return
        self._finish(child)

    def _finish(self, child: Child) -> None:
        record = self._record(child)
        child.record = record
        self.in_flight_ids.discard(child.program_id)
        if child.iteration == SEED_ITERATION and record.status == Status.SYSTEM_ERROR.value:
            return  # not the seed's fault: leave no row, so that a resume evaluates it again
        if self.settings.deterministic and child.iteration != SEED_ITERATION:
            return  # integrated with its batch, in order
        self._integrate(child, record)

    def _record(self, child: Child) -> ProgramRecord:
        metrics: dict[str, float] = {}
        for outcome in child.outcomes:
            metrics.update(outcome.metrics)
        last = child.outcomes[-1]
        status = Status.OK if all(o.passed for o in child.outcomes) else last.status
        metric = self.problem.score.metric
        score = metrics.get(metric)
        features = feature_values(self.problem, metrics, child.code) if status is Status.OK else {}
        cell = cell_of(self.problem.features, features) if status is Status.OK else None
        artifacts: dict[str, str] = {}
        if status is Status.OK:
            # An "ok" program must be placeable: a score to rank it by and a value for every feature axis.
            missing = [dim.name for dim in self.problem.features if dim.name not in features]
            if score is None:
                status, artifacts["message"] = Status.EVALUATOR_ERROR, f"the evaluator returned no {metric!r} metric"
            elif not math.isfinite(score):
                status, artifacts["message"] = Status.WRONG_OUTPUT, f"the score {metric!r} is {score}"
            elif missing:
                status = Status.EVALUATOR_ERROR
                artifacts["message"] = f"no value for feature(s) {', '.join(missing)} in the evaluator's metrics"
        if score is not None and not math.isfinite(score):
            score = None
        if status is not Status.OK:
            cell = None
        fitness = score * self.sign if status is Status.OK and score is not None else None
        for outcome in child.outcomes:
            for name, text in outcome.artifacts.items():
                artifacts[f"{outcome.stage}.{name}" if len(child.outcomes) > 1 else name] = text
            if outcome.message and not outcome.passed:
                artifacts.setdefault("message", outcome.message)
        proposal = child.proposal
        parent = child.parent
        return ProgramRecord(
            program_id=child.program_id,
            parent_ids=((parent.program_id,) + child.inspirations) if parent else (),
            island=child.island,
            iteration=child.iteration,
            generation=(parent.generation + 1) if parent else 0,
            code=child.code,
            status=status.value,
            edit=proposal.response if proposal else "",
            edit_error=child.edit_error,
            mutator=proposal.mutator if proposal else ("seed" if parent is None else getattr(self.mutator, "name", "")),
            score=score,
            fitness=fitness,
            metrics=metrics,
            features=features,
            cell=cell,
            stages=[o.to_dict() for o in child.outcomes],
            artifacts=artifacts,
            isolation=next((o.isolation for o in child.outcomes if o.isolation), ""),
            in_process=any(o.in_process for o in child.outcomes),
            prompt=proposal.prompt if proposal else "",
            llm=dict(proposal.llm) if proposal else {},
            mutate_seconds=child.mutate_seconds,
            eval_seconds=sum(o.seconds for o in child.outcomes),
            created_at=time.time(),
            run_id=self.run_id,
        )

    def _integrate(self, child: Child, record: ProgramRecord) -> None:
        self._writer().append(record)
        self.db.add(record)
        self.statuses[record.status] += 1
        if record.status != Status.INVALID_EDIT.value:
            self.evaluated_this_session += 1
        self._check_target(record)
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
            for migration in self.db.migrate(child.iteration):
                self._writer().record_migration(migration.program_id, migration.from_island, migration.to_island,
                                                child.iteration)

    def _check_target(self, record: ProgramRecord) -> None:
        target = self.settings.target_score
        if target is not None and record.fitness is not None and record.fitness >= target * self.sign:
            self._stop(StopReason.TARGET, f"target score {target} reached by {record.program_id}")

    def _observe(self, child: Child, outcome: MutationOutcome) -> None:
        observe = getattr(self.mutator, "observe", None)
        if observe is not None and child.proposal is not None:
            try:
                observe(child.proposal, outcome)
            except Exception as exc:  # noqa: BLE001 - feedback must never stop a run
                self.progress.message(f"mutator feedback failed: {exc}")

    # ------------------------------------------------------------------ stopping and reporting
    def _check_limits(self) -> None:
        limit = self.settings.time_limit
        if limit is not None and time.monotonic() - self.started >= limit:
            self._stop(StopReason.TIME_LIMIT, f"time limit of {limit:g} s reached")

    def _stop(self, reason: StopReason, message: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message

    def _writer(self) -> ArchiveWriter:
        assert self.writer is not None
        return self.writer

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
            done=self.done,
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
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "stop_message": self.stop_message,
            "done": self.done,
            "budget": self.settings.iterations,
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
        )
