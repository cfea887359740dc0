"""The in-memory program database: one MAP-Elites grid per island, parent sampling and ring migration.

Each island holds a grid of ``prod(grid_shape)`` cells; a cell keeps its single best program (its elite). Programs
are compared by the total order ``(fitness desc, iteration asc, program_id asc)``: bigger fitness wins, and of two
equally fit programs the one found first stays. That order makes every grid a pure function of the set of
programs ever placed in it, whatever the arrival order, so ``ProgramDatabase.rebuild`` can reproduce a live
database exactly from the archive's programs and migration events.

Memory stays bounded by the grids: code, metrics and recent attempts are kept only for current elites; of the
other programs only the id is remembered (for dedup) and their status counted.

Oversight (``evolve.oversight``) may *exclude* a program (overfit on held-out data, or quarantined by a tripwire):
it keeps its cell, so the grids stay a pure function of the programs placed, but it is never drawn as a parent,
shown as an inspiration or migrated. Each island keeps its excluded elites in rank order, so sampling skips them at
a cost that does not grow with the grid.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evolve.database_rebuild import (
    RebuildError,
    as_moves,
    as_table,
    cell_winners,
    recent_children,
    summary_text,
)
from evolve.mutators.base import Attempt, ProgramView
from evolve.problem import FeatureDim
from evolve.schema import ARTIFACT_LIMIT, ProgramRecord
from evolve.types import Status

__all__ = ["AddStatus", "AllExcludedError", "ArchiveStats", "EmptyDatabaseError", "Migration", "ProgramDatabase",
           "RebuildError", "cell_of"]

VIEW_ARTIFACT_LIMIT = 2000  # characters per artifact handed to prompts
assert VIEW_ARTIFACT_LIMIT <= ARTIFACT_LIMIT  # _clip relies on the archived copy keeping more head and tail


class AddStatus(StrEnum):
    NEW_CELL = "new_cell"  # the program took an empty cell
    IMPROVED = "improved"  # the program dethroned the cell's elite
    NOT_IMPROVED = "not_improved"  # the cell's elite stays
    NOT_ELIGIBLE = "not_eligible"  # failed, unscored or unplaceable: counted and remembered, never an elite


class EmptyDatabaseError(LookupError):
    """No island holds any elite yet (the seed program must be added first)."""


class AllExcludedError(EmptyDatabaseError):
    """Every elite is excluded (overfit or quarantined): there is no parent left to breed from."""


@dataclass(frozen=True)
class Migration:
    """One elite copied from an island to the next. Record it with ``ArchiveWriter.record_migration``."""

    program_id: str
    from_island: int
    to_island: int
    iteration: int
    outcome: AddStatus


@dataclass(frozen=True)
class ArchiveStats:
    programs_seen: int
    status_counts: dict[str, int]
    elites_per_island: tuple[int, ...]
    coverage_per_island: tuple[float, ...]  # occupied / total cells
    cells_per_island: int
    distinct_elites: int  # programs elite in at least one island
    best_score: float | None
    best_fitness: float | None
    best_program_id: str | None
    best_island: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "programs_seen": self.programs_seen,
            "status_counts": dict(self.status_counts),
            "elites_per_island": list(self.elites_per_island),
            "coverage_per_island": list(self.coverage_per_island),
            "cells_per_island": self.cells_per_island,
            "distinct_elites": self.distinct_elites,
            "best_score": self.best_score,
            "best_fitness": self.best_fitness,
            "best_program_id": self.best_program_id,
            "best_island": self.best_island,
        }


def cell_of(features: Sequence[FeatureDim], values: Mapping[str, float]) -> int | None:
    """Flat (C-order) cell index of a program's feature values; None when a feature value is missing."""
    index = 0
    for dim in features:
        value = values.get(dim.name)
        if value is None:
            return None
        index = index * dim.bins + dim.bin_of(float(value))
    return index


@dataclass
class _Elite:
    """What the database keeps of a program while it is an elite somewhere."""

    program_id: str
    code: str
    score: float | None
    fitness: float
    iteration: int
    generation: int
    cell: int
    metrics: dict[str, float]
    status: str
    artifacts: dict[str, str]
    islands: set[int] = field(default_factory=set)

    @property
    def key(self) -> tuple[float, int, str]:
        """Sort key: ascending order is best first."""
        return (-self.fitness, self.iteration, self.program_id)

    def view(self, island: int) -> ProgramView:
        return ProgramView(
            program_id=self.program_id,
            code=self.code,
            score=self.score,
            metrics=dict(self.metrics),
            status=self.status,
            artifacts=dict(self.artifacts),
            island=island,
            generation=self.generation,
        )


def _eligible(record: ProgramRecord) -> bool:
    return (
        record.status == Status.OK.value
        and record.fitness is not None
        and math.isfinite(record.fitness)
        and record.cell is not None
    )


def _elite_of(record: ProgramRecord) -> _Elite:
    assert record.fitness is not None and record.cell is not None
    return _Elite(
        program_id=record.program_id,
        code=record.code,
        score=record.score,
        fitness=float(record.fitness),
        iteration=record.iteration,
        generation=record.generation,
        cell=int(record.cell),
        metrics=dict(record.metrics),
        status=record.status,
        artifacts={k: _clip(v) for k, v in record.artifacts.items()},
    )


def _clip(text: str, limit: int = VIEW_ARTIFACT_LIMIT) -> str:
    """Head and tail of ``text``. Unlike the archive's truncation it carries no count, so clipping an artifact
    gives the same text whether it comes from a live record or from its archived (already truncated) copy."""
    if len(text) <= limit:
        return text
    head = limit // 4
    return f"{text[:head]}\n... [cut] ...\n{text[-(limit - head):]}"


def _summary(record: ProgramRecord) -> str:
    return summary_text(record.edit_error, record.stages)


def _attempt_of(record: ProgramRecord) -> Attempt:
    return Attempt(edit=record.edit, status=record.status, score=record.score, summary=_summary(record))


class _Island:
    """One MAP-Elites grid with its elites kept sorted best first (for rank-based sampling), and its excluded elites
    (a sorted subset of ``ranked``) so that sampling can skip them."""

    def __init__(self, excluded: set[str]) -> None:
        self.cells: dict[int, _Elite] = {}
        self.ranked: list[tuple[tuple[float, int, str], int]] = []  # (elite key, cell), ascending = best first
        self.blocked: list[tuple[tuple[float, int, str], int]] = []  # the excluded elites' entries of ``ranked``
        self._excluded = excluded  # the database's set of excluded program ids

    def place(self, elite: _Elite) -> tuple[AddStatus, _Elite | None]:
        """Offer ``elite`` for its cell; return the outcome and the dethroned elite, if any."""
        incumbent = self.cells.get(elite.cell)
        if incumbent is None:
            self.cells[elite.cell] = elite
            self._insert(elite)
            return AddStatus.NEW_CELL, None
        if elite.key >= incumbent.key:  # also covers the same program offered again
            return AddStatus.NOT_IMPROVED, None
        old = (incumbent.key, incumbent.cell)
        del self.ranked[bisect.bisect_left(self.ranked, old)]
        self.unblock(incumbent)
        self.cells[elite.cell] = elite
        self._insert(elite)
        return AddStatus.IMPROVED, incumbent

    def _insert(self, elite: _Elite) -> None:
        bisect.insort(self.ranked, (elite.key, elite.cell))
        if elite.program_id in self._excluded:
            self.block(elite)

    def block(self, elite: _Elite) -> None:
        entry = (elite.key, elite.cell)
        i = bisect.bisect_left(self.blocked, entry)
        if i == len(self.blocked) or self.blocked[i] != entry:
            self.blocked.insert(i, entry)

    def unblock(self, elite: _Elite) -> None:
        entry = (elite.key, elite.cell)
        i = bisect.bisect_left(self.blocked, entry)
        if i < len(self.blocked) and self.blocked[i] == entry:
            del self.blocked[i]

    @property
    def allowed(self) -> int:
        """Elites that may be parents."""
        return len(self.ranked) - len(self.blocked)

    def at_rank(self, rank: int) -> _Elite:
        return self.cells[self.ranked[rank][1]]

    def at_allowed_rank(self, rank: int) -> _Elite:
        """The elite of rank ``rank`` among the allowed ones (excluded elites skipped): O(excluded elites)."""
        actual = rank
        for entry in self.blocked:  # ascending ranks
            if bisect.bisect_left(self.ranked, entry) <= actual:
                actual += 1
            else:
                break
        return self.at_rank(actual)

    def best(self) -> _Elite | None:
        return self.at_rank(0) if self.ranked else None

    def best_allowed(self) -> _Elite | None:
        return self.at_allowed_rank(0) if self.allowed > 0 else None


class ProgramDatabase:
    """MAP-Elites grids over ``n_islands`` islands, fed with ``ProgramRecord`` s (``fitness``: bigger is better).

    Parent sampling (``sample_parent``), with one ``rng.random()`` draw deciding the mode:

    * exploitation (probability ``exploitation``): an elite of the island chosen by fitness rank ``r`` (0 = best)
      with weight ``1 / (r + 1)``. With ``n`` elites the best is picked with probability ``1 / H(n)`` (H the
      harmonic number: 1/7.5 for 1,000 elites), so good programs are favoured without starving the rest;
    * exploration (otherwise): a uniformly random occupied cell of the island.
    """

    def __init__(
        self,
        n_islands: int,
        grid_shape: tuple[int, ...],
        exploitation: float = 0.7,
        attempts_per_parent: int = 8,
    ):
        if n_islands < 1:
            raise ValueError("n_islands must be >= 1")
        if not grid_shape or any(int(b) < 1 for b in grid_shape):
            raise ValueError(f"grid_shape must be non-empty positive bins, got {grid_shape}")
        if not 0.0 <= exploitation <= 1.0:
            raise ValueError("exploitation must be between 0 and 1")
        self.n_islands = n_islands
        self.grid_shape = tuple(int(b) for b in grid_shape)
        self.n_cells = math.prod(self.grid_shape)
        self.exploitation = exploitation
        self.attempts_per_parent = attempts_per_parent
        self._excluded: set[str] = set()  # overfit or quarantined programs: never parents, inspirations or migrants
        self._islands = [_Island(self._excluded) for _ in range(n_islands)]
        self._elites: dict[str, _Elite] = {}  # every program that is an elite of at least one island
        self._seen: set[str] = set()
        self._status_counts: Counter[str] = Counter()
        self._attempts: dict[str, deque[Attempt]] = {}  # only for current elites
        self._harmonic: list[float] = [0.0]  # _harmonic[n] = H(n), grown on demand
        self.version = 0  # counts changes of any grid (evolve.search caches island views on it)

    # -- adding -------------------------------------------------------------------------------------------------

    def __contains__(self, program_id: object) -> bool:
        return program_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, record: ProgramRecord) -> AddStatus:
        """Count and remember ``record``; place it in its island's grid if eligible (status ok, fitness, cell)."""
        eligible = _eligible(record)
        if eligible:
            self._check_placement(record.island, record.cell)  # before any state changes
        self._seen.add(record.program_id)
        self._status_counts[record.status] += 1
        parent = record.parent_id
        if parent is not None and parent in self._elites:
            self._attempts_for(parent).append(_attempt_of(record))
        if not eligible:
            return AddStatus.NOT_ELIGIBLE
        elite = self._elites.get(record.program_id) or _elite_of(record)
        return self._place(record.island, elite)

    def _check_placement(self, island: int, cell: int | None) -> None:
        if not 0 <= island < self.n_islands:
            raise ValueError(f"island {island} out of range for {self.n_islands} islands")
        if cell is None or not 0 <= cell < self.n_cells:
            raise ValueError(f"cell {cell} out of range for grid {self.grid_shape}")

    def _attempts_for(self, program_id: str) -> deque[Attempt]:
        attempts = self._attempts.get(program_id)
        if attempts is None:
            attempts = self._attempts[program_id] = deque(maxlen=self.attempts_per_parent)
        return attempts

    def _place(self, island: int, elite: _Elite, released: list[_Elite] | None = None) -> AddStatus:
        """Offer ``elite`` to ``island``. A dethroned elite is released now, or appended to ``released``."""
        status, dethroned = self._islands[island].place(elite)
        if status is AddStatus.NOT_IMPROVED:
            return status
        self.version += 1
        elite.islands.add(island)
        self._elites[elite.program_id] = elite
        if dethroned is not None:
            dethroned.islands.discard(island)
            if released is None:
                self._release(dethroned)
            else:
                released.append(dethroned)
        return status

    def _release(self, elite: _Elite) -> None:
        if not elite.islands and self._elites.get(elite.program_id) is elite:
            # Gone for good: only elites are sampled or migrated, so it can never be placed again.
            del self._elites[elite.program_id]
            self._attempts.pop(elite.program_id, None)

    def _move_all(self, moves: Sequence[tuple[_Elite, int]]) -> list[AddStatus]:
        """Place several elites at once; programs dethroned on one island but moved to another are not lost."""
        released: list[_Elite] = []
        outcomes = [self._place(island, elite, released) for elite, island in moves]
        for elite in released:
            self._release(elite)
        return outcomes

    # -- sampling -----------------------------------------------------------------------------------------------

    def _harmonic_upto(self, n: int) -> list[float]:
        h = self._harmonic
        while len(h) <= n:
            h.append(h[-1] + 1.0 / len(h))
        return h

    def sample_parent(self, island: int, rng: np.random.Generator) -> ProgramView:
        """A parent from ``island`` (see the class docstring), never an excluded program; the best allowed elite of
        any island if the island has none. Ranks count allowed elites only, as if the excluded were not there."""
        grid = self._islands[island]
        n = grid.allowed
        exploit = rng.random() < self.exploitation
        u = rng.random()
        if n == 0:
            best = self._best(allowed=True)
            if best is None:
                if self._elites:
                    raise AllExcludedError(f"every elite is excluded ({len(self._excluded)} overfit or quarantined "
                                           "program(s)): no parent left")
                raise EmptyDatabaseError("the database holds no elite yet")
            return best[0].view(best[1])
        if exploit:
            h = self._harmonic_upto(n)
            # Rank r owns the interval [H(r), H(r+1)) of [0, H(n)): weight 1/(r+1).
            rank = min(n - 1, bisect.bisect_right(h, u * h[n], 1, n + 1) - 1)
        else:
            rank = min(n - 1, int(u * n))
        return grid.at_allowed_rank(rank).view(island)

    def inspirations(
        self, island: int, k: int, rng: np.random.Generator, exclude: str | None = None
    ) -> tuple[ProgramView, ...]:
        """Up to ``k`` other elites to show next to the parent, without repeats and never ``exclude``.

        First the best elites of the other islands, best first, for up to half of ``k`` (rounded up); then
        elites of other cells of ``island`` picked uniformly at random; any remaining slots go to the other
        islands' bests that were left out.
        """
        if k <= 0:
            return ()
        chosen: list[ProgramView] = []
        taken: set[str] = {exclude} if exclude else set()

        foreign = []
        for other in range(self.n_islands):
            best = self._islands[other].best_allowed()
            if other != island and best is not None:
                foreign.append((best.key, other, best))
        foreign.sort(key=lambda item: item[0])
        foreign_views = [e.view(i) for _, i, e in foreign]

        def take(views: Iterable[ProgramView], limit: int) -> None:
            for view in views:
                if len(chosen) >= limit:
                    return
                if view.program_id not in taken and view.program_id not in self._excluded:
                    taken.add(view.program_id)
                    chosen.append(view)

        take(foreign_views, (k + 1) // 2)
        grid = self._islands[island]
        if grid.ranked:
            order = rng.permutation(len(grid.ranked))
            take((grid.at_rank(int(r)).view(island) for r in order), k)
        take(foreign_views, k)
        return tuple(chosen)

    def attempts(self, parent_id: str) -> tuple[Attempt, ...]:
        """The most recent children of ``parent_id`` (oldest first), while it is an elite."""
        return tuple(self._attempts.get(parent_id, ()))

    # -- migration ----------------------------------------------------------------------------------------------

    def migrate(self, iteration: int) -> list[Migration]:
        """Ring migration: each island's best allowed elite (as it was before any move) competes for its cell in the
        next."""
        if self.n_islands < 2:
            return []
        sources = [(source, grid.best_allowed()) for source, grid in enumerate(self._islands)]
        sources = [(source, elite) for source, elite in sources if elite is not None]
        outcomes = self._move_all([(elite, (source + 1) % self.n_islands) for source, elite in sources])
        return [
            Migration(elite.program_id, source, (source + 1) % self.n_islands, iteration, outcome)
            for (source, elite), outcome in zip(sources, outcomes, strict=True)
        ]

    def place(self, program_id: str, island: int) -> Migration:
        """Copy an elite to ``island`` outside the ring schedule (the seed populating every island).

        Record it with ``ArchiveWriter.record_migration`` like any migration so ``rebuild`` replays it.
        """
        elite = self._elites.get(program_id)
        if elite is None:
            raise KeyError(f"{program_id} is not an elite")
        source = min(elite.islands)
        (outcome,) = self._move_all([(elite, island)])
        return Migration(program_id, source, island, elite.iteration, outcome)

    # -- queries ------------------------------------------------------------------------------------------------

    def _best(self, allowed: bool = False) -> tuple[_Elite, int] | None:
        found = None
        for island, grid in enumerate(self._islands):
            best = grid.best_allowed() if allowed else grid.best()
            if best is not None and (found is None or best.key < found[0].key):
                found = (best, island)
        return found

    def best(self) -> ProgramView | None:
        """The fittest elite of all islands by visible fitness, excluded or not (on the first island holding it)."""
        found = self._best()
        return None if found is None else found[0].view(found[1])

    def best_allowed(self) -> ProgramView | None:
        """The fittest elite that is not excluded."""
        found = self._best(allowed=True)
        return None if found is None else found[0].view(found[1])

    # -- exclusion (evolve.oversight) ---------------------------------------------------------------------------

    def exclude(self, program_id: str) -> None:
        """Never use ``program_id`` as a parent, an inspiration or a migrant (it keeps its cells)."""
        if program_id in self._excluded:
            return
        self._excluded.add(program_id)
        elite = self._elites.get(program_id)
        if elite is not None:
            for island in elite.islands:
                self._islands[island].block(elite)

    def include(self, program_id: str) -> None:
        """Undo ``exclude`` (a quarantine lifted)."""
        if program_id not in self._excluded:
            return
        self._excluded.discard(program_id)
        elite = self._elites.get(program_id)
        if elite is not None:
            for island in elite.islands:
                self._islands[island].unblock(elite)

    def is_excluded(self, program_id: str) -> bool:
        return program_id in self._excluded

    @property
    def excluded(self) -> frozenset[str]:
        return frozenset(self._excluded)

    def top_elites(self, island: int, n: int) -> tuple[ProgramView, ...]:
        """Up to ``n`` best allowed elites of ``island``, best first: O(n + excluded elites)."""
        grid = self._islands[island]
        return tuple(grid.at_allowed_rank(r).view(island) for r in range(min(n, grid.allowed)))

    def fitness_key(self, program_id: str) -> tuple[float, int, str] | None:
        """The order key of an elite (fitness desc, iteration, id), or None when it is not an elite."""
        elite = self._elites.get(program_id)
        return None if elite is None or not elite.islands else elite.key

    @property
    def best_record_id(self) -> str | None:
        found = self._best()
        return None if found is None else found[0].program_id

    def view(self, program_id: str) -> ProgramView | None:
        """The elite ``program_id`` as a mutator sees it (on the first island holding it); None if not an elite."""
        elite = self._elites.get(program_id)
        return None if elite is None or not elite.islands else elite.view(min(elite.islands))

    def elites(self, island: int) -> tuple[ProgramView, ...]:
        """The island's elites, best first."""
        grid = self._islands[island]
        return tuple(grid.at_rank(r).view(island) for r in range(len(grid.ranked)))

    def grid(self, island: int) -> dict[int, str]:
        """``{cell: elite program_id}`` of one island."""
        return {cell: elite.program_id for cell, elite in self._islands[island].cells.items()}

    def snapshot(self) -> dict[tuple[int, int], str]:
        """``{(island, cell): elite program_id}`` over all islands: what ``rebuild`` must reproduce."""
        return {(i, c): pid for i in range(self.n_islands) for c, pid in self.grid(i).items()}

    def stats(self) -> ArchiveStats:
        found = self._best()
        best = found[0] if found else None
        counts = [len(grid.cells) for grid in self._islands]
        return ArchiveStats(
            programs_seen=len(self._seen),
            status_counts=dict(sorted(self._status_counts.items())),
            elites_per_island=tuple(counts),
            coverage_per_island=tuple(c / self.n_cells for c in counts),
            cells_per_island=self.n_cells,
            distinct_elites=len(self._elites),
            best_score=None if best is None else best.score,
            best_fitness=None if best is None else best.fitness,
            best_program_id=None if best is None else best.program_id,
            best_island=None if found is None else found[1],
        )

    # -- rebuilding from the archive ----------------------------------------------------------------------------

    @classmethod
    def rebuild(
        cls,
        programs: pa.Table | Iterable[ProgramRecord],
        migrations: pa.Table | Iterable[Migration] | None = None,
        *,
        n_islands: int,
        grid_shape: tuple[int, ...],
        exploitation: float = 0.7,
        attempts_per_parent: int = 8,
        excluded: Iterable[str] = (),
    ) -> ProgramDatabase:
        """The database a live run had, from its archive (``read_programs(...).table``, ``read_migrations(...)``)
        and the programs oversight excluded (their standings, from the run's events).

        Grids are reproduced exactly: each cell's elite is the best, in the database's total order, of every
        program placed there (by its own island or by a migration), which is what the live grid holds whatever
        the arrival order. Only the cell winners' rows are decoded, so this is columnar work plus O(cells).
        The attempt lists of each elite are its last ``attempts_per_parent`` children by iteration: what a live run
        integrating results in submission order holds.
        """
        db = cls(n_islands, grid_shape, exploitation=exploitation, attempts_per_parent=attempts_per_parent)
        table = as_table(programs)
        db._seen.update(table.column("program_id").to_pylist())
        for item in pc.value_counts(table.column("status").fill_null("")).to_pylist():
            db._status_counts[item["values"]] += item["counts"]
        winners = cell_winners(table, as_moves(migrations), n_islands, db.n_cells)
        rows = sorted({row for _, _, row in winners})
        elites = {
            r.program_id: _elite_of(r)
            for r in (ProgramRecord.from_row(d) for d in table.take(pa.array(rows, pa.int64())).to_pylist())
        }
        ids = table.column("program_id")
        for island, cell, row in winners:
            elite = elites[ids[row].as_py()]
            elite.islands.add(island)
            db._islands[island].cells[cell] = elite
        for grid in db._islands:
            grid.ranked = sorted((elite.key, cell) for cell, elite in grid.cells.items())
        db._elites = elites
        for program_id in excluded:
            db.exclude(program_id)
        for parent, attempts in recent_children(table, list(elites), attempts_per_parent).items():
            db._attempts_for(parent).extend(attempts)
        return db
