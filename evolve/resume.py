"""Continuing a run: inspect everything it wrote, refuse on damage unless accepted, rebuild the database.

The order matters for "nothing lost": the run is read in full (every page verified) *before* anything changes;
with damage and no acceptance, the resume is refused and the folder is left exactly as it was (journals included).
Only an accepted resume converts the journals, moves damaged files to ``RUN/damaged/`` and records the iterations
they held as lost: they count against the budget and their numbers are never used again.

In deterministic mode a batch torn by a kill (some of its rows written, others not) is completed, not restarted:
the database is rebuilt as it was before the batch, the batch is proposed again from that state, and the children
already recorded are taken from the archive instead of being made again (see ``evolve.batches``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from evolve.damage import Damage, RunInspection, inspect_run
from evolve.database import ProgramDatabase, RebuildError
from evolve.mutators.base import MutationOutcome, Proposal
from evolve.oversight.rebuild import RestoredOversight, restore_oversight
from evolve.problem import Problem
from evolve.ranges import format_ranges, from_ranges, to_ranges
from evolve.settings import RunSettings
from evolve.types import Status

SEED_ITERATION = 0


class RunRefused(RuntimeError):
    """The run cannot start or continue as asked; nothing was changed."""


class DamageRefused(RunRefused):
    """The run holds damage and the resume did not accept it. ``damage`` lists it."""

    def __init__(self, message: str, damage: list[Damage]):
        super().__init__(message)
        self.damage = damage


@dataclass(frozen=True)
class Lost:
    """Iterations whose rows were lost to accepted damage: counted as done, never numbered again."""

    iterations: frozenset[int] = frozenset()
    unknown_rows: int = 0  # lost program rows whose iteration nothing told
    files: tuple[dict[str, Any], ...] = ()  # what was moved aside, and when

    @property
    def count(self) -> int:
        return len(self.iterations) + self.unknown_rows

    def to_info(self) -> dict[str, Any]:
        return {"iterations": to_ranges(self.iterations), "count": self.count, "unknown_rows": self.unknown_rows,
                "files": list(self.files)}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Lost:
        data = info.get("lost") if isinstance(info.get("lost"), dict) else {}
        return cls(frozenset(from_ranges(data.get("iterations"))), int(data.get("unknown_rows") or 0),
                   tuple(f for f in data.get("files") or [] if isinstance(f, dict)))

    def describe(self) -> str:
        if not self.count:
            return "no iterations lost"
        parts = []
        if self.iterations:
            parts.append(f"iteration(s) {format_ranges(self.iterations)}")
        if self.unknown_rows:
            parts.append(f"{self.unknown_rows} row(s) of unknown iteration")
        return f"{self.count} iteration(s) lost to damage ({'; '.join(parts)})"


@dataclass(frozen=True)
class BatchReplay:
    """Deterministic mode: the torn batch to complete, and what of it the archive already holds."""

    start: int
    recorded: dict[int, dict[str, Any]]  # iteration -> archived row
    migration_keys: frozenset[tuple[Any, ...]]  # migration events already written at iterations >= start


@dataclass
class ResumeState:
    db: ProgramDatabase
    done: int  # iterations counted against the budget: recorded children plus lost ones
    next_iteration: int
    statuses: Counter[str]
    seed_score: float | None
    lost: Lost
    llm_records: list[dict[str, Any]]
    inspection: RunInspection | None = None
    replay: BatchReplay | None = None
    notes: list[str] = field(default_factory=list)
    accepted: list[Damage] = field(default_factory=list)
    history: pa.Table | None = None  # the children before the resume point (``past_outcomes``)
    fitness: dict[str, float | None] = field(default_factory=dict)  # every recorded program's fitness
    oversight: RestoredOversight | None = None  # standings rebuilt from the run's events


_HISTORY_COLUMNS = ("iteration", "parent_ids", "status", "fitness", "edit", "mutator", "llm", "edit_error")


def past_outcomes(state: ResumeState) -> Iterator[tuple[Proposal, MutationOutcome]]:
    """Each earlier child's answer and outcome, in iteration order, as the loop gave them to ``observe``: a mutator
    that learns from outcomes (``tune``, the LLM bandit) continues a resumed run with what it had learned."""
    table = state.history
    if table is None or table.num_rows == 0:
        return
    for batch in table.to_batches(max_chunksize=1024):
        for row in batch.to_pylist():
            if row["iteration"] == SEED_ITERATION or not row["parent_ids"]:
                continue
            llm = json.loads(row["llm"]) if row["llm"] else {}
            proposal = Proposal(response=row["edit"] or "", mutator=row["mutator"] or "", llm=llm)
            yield proposal, MutationOutcome(row["status"] or "", state.fitness.get(row["parent_ids"][0]),
                                            row["fitness"], row["edit_error"] or "")


def refusal(run_dir: Path, inspection: RunInspection, resume_command: str) -> DamageRefused:
    lost = inspection.lost_iterations()
    lines = [f"cannot resume {run_dir}: {len(inspection.damage)} damaged file(s); nothing was changed."]
    lines += [f"  - {text}" for text in inspection.summary_lines()]
    held = f"iteration(s) {format_ranges(lost)}" if lost else "the rows above"
    extra = f" and {inspection.unknown_lost_rows()} row(s) of unknown iteration" if inspection.unknown_lost_rows() else ""
    if all(d.table == "events" for d in inspection.damage):  # events are no iterations: the budget is unchanged
        record = "record the events above as lost (no iteration is lost; the budget is unchanged)"
    else:
        record = f"record {held}{extra} as lost (they count against the budget; their numbers are not used again)"
    lines += [
        "Choices:",
        "  - restore the damaged files from a backup, then resume again;",
        f"  - `{resume_command} --accept-damage`: move them to {run_dir / 'damaged'}/ (never deleted), {record} "
        "and continue;",
        "  - or start a new run. `evolve archive verify RUN_DIR` shows this list again.",
    ]
    return DamageRefused("\n".join(lines), inspection.damage)


def _rows_before(table: pa.Table, start: int) -> pa.Table:
    return table.filter(pc.less(table.column("iteration"), start))


def plan_replay(programs: pa.Table, settings: RunSettings) -> int | None:
    """The first iteration of a batch torn by a kill (rows recorded for part of it), or None.

    Batches cover ``[1, B], [B+1, 2B], ...``; iterations before the first missing one are all recorded.
    """
    if not settings.deterministic or programs.num_rows == 0:
        return None
    children = sorted(i for i in set(programs.column("iteration").to_pylist()) if i > SEED_ITERATION)
    first_missing = next((k for k, i in enumerate(children, 1) if i != k), len(children) + 1)
    size = settings.batch_size
    start = ((first_missing - 1) // size) * size + 1
    recorded = [i for i in children if i >= start]
    if not recorded:
        return None
    if max(recorded) >= start + size:
        return None  # rows past the torn batch: not a state deterministic mode leaves; continue plainly
    return start


def restore(run_dir: Path, problem: Problem, settings: RunSettings, info: dict[str, Any],
            inspection: RunInspection | None, accept_damage: bool, resume_command: str) -> ResumeState:
    """Inspect (unless given a fresh inspection), refuse on damage unless accepted, and rebuild the database.

    Changes nothing on disk: the caller then lets the writer recover (``ResumeState.inspection`` says what was
    accepted)."""
    if inspection is None:
        inspection = inspect_run(run_dir)
    if inspection.damage and not accept_damage:
        raise refusal(run_dir, inspection, resume_command)
    notes = [f"{p.relative_to(run_dir)} ended in an append cut short by the kill (that row was never "
             "acknowledged; nothing lost)" for p in inspection.torn_tails]
    if inspection.ledger.bad_lines:
        notes.append(f"ledger.jsonl has {inspection.ledger.bad_lines} unreadable line(s): the segments they listed "
                     "cannot be checked against it (the segments themselves were read in full)")
    programs, migrations = inspection.programs, inspection.migrations
    previous = Lost.from_info(info)
    present = inspection.present_iterations
    lost = Lost(
        frozenset((previous.iterations | inspection.lost_iterations()) - present),
        previous.unknown_rows + inspection.unknown_lost_rows(),
        previous.files + tuple(d.to_dict() for d in inspection.damage),
    )
    if inspection.damage:
        notes.append(f"accepted damage: {len(inspection.damage)} file(s) moved to {run_dir / 'damaged'}/; "
                     f"{lost.describe()}")
    replay_start = plan_replay(programs, settings) if not lost.count else None
    replay = None
    if replay_start is not None:
        recorded = programs.filter(pc.greater_equal(programs.column("iteration"), replay_start))
        later = migrations.filter(pc.greater_equal(migrations.column("iteration"), replay_start))
        replay = BatchReplay(
            replay_start,
            {int(r["iteration"]): r for r in recorded.to_pylist()},
            frozenset((r["program_id"], r["from_island"], r["to_island"], r["iteration"]) for r in later.to_pylist()),
        )
        notes.append(f"deterministic mode: completing the batch from iteration {replay_start} "
                     f"({len(replay.recorded)} of its children already recorded)")
        programs, migrations = _rows_before(programs, replay_start), _rows_before(migrations, replay_start)
    oversight = restore_oversight(getattr(inspection, "events", None), programs, problem)
    db, dropped = _rebuild(run_dir, programs, migrations, settings, problem, info, damaged=bool(lost.count),
                           excluded=oversight.state.excluded())
    if dropped:
        notes.append(f"{dropped} migration event(s) pointed at lost programs and were left out of the grids")
    iterations = programs.column("iteration").to_pylist() if programs.num_rows else []
    statuses = programs.column("status").to_pylist() if programs.num_rows else []
    seed_score = None
    for it, status, score in zip(iterations, statuses, programs.column("score").to_pylist(), strict=True):
        if it == SEED_ITERATION and status == Status.OK.value:
            seed_score = score
    stored_next = info.get("next_iteration") if isinstance(info.get("next_iteration"), int) else 0
    if replay is not None:
        next_iteration = replay.start
    elif settings.deterministic and not lost.count:
        # Iterations abandoned without a row are made again, identically: reusing their numbers is the point.
        next_iteration = max(inspection.max_iteration(), 0) + 1
    else:
        next_iteration = max(inspection.max_iteration(), max(lost.iterations, default=0), stored_next - 1) + 1
    llm = []  # every row's, the torn batch's included: budgets count calls already paid for
    everything = inspection.programs
    if everything.num_rows and "llm" in everything.column_names:
        llm = [json.loads(text) for text in everything.column("llm").to_pylist() if text and text != "{}"]
    columns = [c for c in _HISTORY_COLUMNS if c in programs.column_names]
    history = programs.select(columns).sort_by("iteration") if len(columns) == len(_HISTORY_COLUMNS) else None
    fitness = dict(zip(everything.column("program_id").to_pylist(), everything.column("fitness").to_pylist(),
                       strict=True)) if history is not None and everything.num_rows else {}
    return ResumeState(
        db=db,
        done=sum(1 for i in iterations if i != SEED_ITERATION) + lost.count,
        next_iteration=max(1, next_iteration),
        statuses=Counter(s or "" for s in statuses),
        seed_score=seed_score,
        lost=lost,
        llm_records=llm,
        inspection=inspection,
        replay=replay,
        notes=notes,
        accepted=list(inspection.damage),
        history=history,
        fitness=fitness,
        oversight=oversight,
    )


def _rebuild(run_dir: Path, programs: pa.Table, migrations: pa.Table, settings: RunSettings, problem: Problem,
             info: dict[str, Any], damaged: bool, excluded: list[str]) -> tuple[ProgramDatabase, int]:
    """The database (oversight's exclusions applied), and how many migration events were dropped because they
    point at lost programs."""
    def build(moves: pa.Table) -> ProgramDatabase:
        return ProgramDatabase.rebuild(programs, moves, n_islands=settings.islands, grid_shape=problem.grid_shape,
                                       exploitation=settings.exploitation, excluded=excluded)

    try:
        return build(migrations), 0
    except RebuildError as exc:
        if exc.unknown_migrations and damaged:
            keep = pc.invert(pc.is_in(migrations.column("program_id"),
                                      value_set=pa.array(list(exc.unknown_migrations), pa.string())))
            kept = migrations.filter(keep)
            try:
                return build(kept), migrations.num_rows - kept.num_rows
            except RebuildError as again:
                exc = again
        raise RunRefused(_rebuild_reason(run_dir, exc, settings, problem, info)) from None


def _rebuild_reason(run_dir: Path, exc: RebuildError, settings: RunSettings, problem: Problem,
                    info: dict[str, Any]) -> str:
    if exc.unknown_migrations:
        return (f"cannot resume {run_dir}: {exc}. Their rows are missing although no damaged file was found: "
                "`evolve archive verify` lists what is readable; `--accept-damage` continues without them")
    stored = info.get("settings", {}) if isinstance(info.get("settings"), dict) else {}
    changes = []
    if isinstance(stored.get("islands"), int) and stored["islands"] != settings.islands:
        changes.append(f"it has {stored['islands']} islands, this resume asks for {settings.islands}")
    changes.append(f"the problem's feature grid is now {'x'.join(map(str, problem.grid_shape))}")
    return (f"cannot resume {run_dir}: {exc}. The number of islands or the problem's feature grid changed since the "
            f"run started ({'; '.join(changes)}); resume with the run's own settings or start a new run")
