"""Each island's elites as the search needs them (best first, with ids, codes and fitness), kept up to date from
``ProgramDatabase.grid(island)`` differences instead of rebuilding every view.

A child asks for its island's elites up to three times (parent, crossover partner, novelty); within one child the
answer is reused outright, and between children only the cells whose elite changed are fetched (``db.view``, O(1)
each), so the cost per child is one pass over the island's cells (the grid's size, whatever the archive's) and a sort
only when something changed. The order is fitness descending, then program id (the database breaks ties by
iteration first; only exact ties can differ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evolve.mutators.base import ProgramView


@dataclass(frozen=True)
class IslandElites:
    views: tuple[ProgramView, ...]  # best first
    ids: tuple[str, ...]
    codes: tuple[str, ...]
    fitness: np.ndarray  # score * sign, same order
    index: dict[str, int] = field(default_factory=dict)  # program id -> position

    def __len__(self) -> int:
        return len(self.views)

    @classmethod
    def of(cls, views: Sequence[ProgramView], fitness: np.ndarray) -> IslandElites:
        """``views`` (best first) with their fitness, the ids, codes and index derived from them."""
        ids = tuple(v.program_id for v in views)
        return cls(tuple(views), ids, tuple(v.code for v in views), fitness, {pid: i for i, pid in enumerate(ids)})


EMPTY = IslandElites((), (), (), np.zeros(0))


@dataclass
class _Entry:
    grid: dict[int, str]
    by_id: dict[str, ProgramView]
    elites: IslandElites
    token: Any = None
    version: Any = None


@dataclass
class EliteCache:
    sign: float = 1.0
    _islands: dict[int, _Entry] = field(default_factory=dict)

    def get(self, db: Any, island: int, token: Any = None) -> IslandElites:
        """The island's elites; ``token`` (the child being planned) reuses the last answer without looking."""
        entry = self._islands.get(island)
        if entry is not None and token is not None and entry.token == token:
            return entry.elites
        # A database that counts its changes (``version``) spares even the look at the grid while nothing changed.
        version = getattr(db, "version", None)
        version = None if version is None else (id(db), version)
        if entry is not None and version is not None and entry.version == version:
            entry.token = token
            return entry.elites
        grid = db.grid(island)
        if entry is not None and entry.grid == grid:
            entry.token, entry.version = token, version
            return entry.elites
        by_id = {pid: view for pid, view in (entry.by_id.items() if entry is not None else ())}
        current = set(grid.values())
        for pid in [p for p in by_id if p not in current]:
            del by_id[pid]
        for pid in current - by_id.keys():
            view = db.view(pid)
            if view is not None:
                by_id[pid] = view
        ordered = sorted(by_id.values(), key=lambda v: (-self.fitness(v), v.program_id))
        elites = IslandElites.of(ordered, np.array([self.fitness(v) for v in ordered], dtype=float))
        self._islands[island] = _Entry(grid, by_id, elites, token, version)
        return elites

    def breedable(self, db: Any, island: int, token: Any = None) -> IslandElites:
        """The island's elites a child may be bred from: ``get`` less the programs the database excludes
        (evolve.oversight: overfit, quarantined or being checked), as its own parent sampling leaves them out."""
        elites = self.get(db, island, token)
        keep = [i for i, pid in enumerate(elites.ids) if not db.is_excluded(pid)]
        if len(keep) == len(elites):
            return elites
        return IslandElites.of([elites.views[i] for i in keep], elites.fitness[keep])

    def fitness(self, view: ProgramView) -> float:
        # Elites always hold a finite score; anything else ranks last.
        if view.score is None or not math.isfinite(view.score):
            return -1e300
        return float(view.score) * self.sign
