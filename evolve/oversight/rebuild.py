"""Oversight after a resume: standings, pending checks and the jump history, rebuilt from the run's files."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evolve.oversight import events as ev
from evolve.oversight.state import OversightState, Subject
from evolve.problem import Problem
from evolve.schema import ProgramRecord
from evolve.types import Status


@dataclass
class RestoredOversight:
    state: OversightState
    subjects: dict[str, Subject] = field(default_factory=dict)  # promoted and pending programs, with their code
    jump_fitness: list[float] = field(default_factory=list)  # the successive bests, for the jump tripwire


def restore_oversight(events: pa.Table | None, programs: pa.Table, problem: Problem) -> RestoredOversight:
    """The oversight of the programs in ``programs`` (events about other programs, such as those of a torn
    deterministic batch being completed, are left out: they are recorded again as it completes)."""
    rows = ev.event_rows(_relevant(events, programs)) if events is not None and events.num_rows else []
    state = OversightState.rebuild(rows, problem.oversight.top_k)
    wanted = [w.program_id for w in state.watched.values() if w.pending or w.standing.value == "promoted"]
    subjects: dict[str, Subject] = {}
    if wanted and programs.num_rows:
        picked = programs.filter(pc.is_in(programs.column("program_id"), value_set=pa.array(wanted, pa.string())))
        for row in picked.to_pylist():
            record = ProgramRecord.from_row(row)
            if record.status == Status.OK.value and record.fitness is not None:
                subjects[record.program_id] = Subject.of_record(record)
    return RestoredOversight(state, subjects, _successive_bests(programs, state.arrival_tripped))


def _relevant(events: pa.Table, programs: pa.Table) -> pa.Table:
    """The events standings are rebuilt from: those about ``programs``, and the anomalies of every program, those of
    a torn batch's rows included (replaying them trips the same wires). Events about no program are left out here:
    ``OversightState.rebuild`` has no use for them."""
    kind = events.column("kind")
    wanted = pc.is_in(kind, value_set=pa.array(ev.STATE_KINDS, pa.string()))
    if "program_id" in events.column_names and programs.num_rows:
        pid = events.column("program_id")
        known = pc.is_in(pid, value_set=programs.column("program_id")).fill_null(False)
        wanted = pc.and_(wanted, pc.or_(known, pc.equal(kind, ev.ANOMALY)))
    return events.filter(wanted)


def _successive_bests(programs: pa.Table, tripped: set[str]) -> list[float]:
    """The running best's successive values over ok programs in iteration order (those a tripwire caught on arrival
    left out): replaying them gives the jump tripwire the history a live run had. Columnar: O(rows)."""
    if not programs.num_rows:
        return []
    table = programs.select(["program_id", "iteration", "fitness"]).filter(
        pc.is_finite(programs.column("fitness")).fill_null(False))
    if tripped:
        table = table.filter(pc.invert(pc.is_in(table.column("program_id"), value_set=pa.array(list(tripped)))))
    if not table.num_rows:
        return []
    table = table.sort_by("iteration")
    fitness = table.column("fitness").to_numpy(zero_copy_only=False).astype(float)
    best = np.maximum.accumulate(fitness)
    rises = np.flatnonzero(np.diff(best) > 0) + 1
    return [float(best[0]), *(float(v) for v in best[rises])]

