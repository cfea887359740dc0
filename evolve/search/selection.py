"""Parent selection policies over an island's elites (``ProgramDatabase.elites(island)``, best first).

Every policy spends exactly two draws of the iteration's generator, as ``ProgramDatabase.sample_parent`` does: the
first decides exploitation (probability ``exploitation``) against exploration (a uniformly random elite of the
island), the second picks within the mode. In exploitation:

* ``rank`` (the default): rank ``r`` (0 = best) with weight ``1 / (r + 1)``. With the run's own exploitation rate
  this *is* ``sample_parent`` (called as is, so a default run draws exactly what it always drew);
* ``power``: weight ``(r + 1) ** -alpha`` (alpha 1 is ``rank``; larger is greedier);
* ``weighted`` (ShinkaEvolve): weight ``sigmoid(lambda * (f - median) / MAD) / (1 + children)``, ``f`` the fitness,
  ``MAD`` the median absolute deviation of the island's fitnesses, ``children`` how many children the parent
  already has: good programs are favoured, and a parent that has had many tries yields to the others.

The cost is one pass over the island's elites (bounded by the grid's cells, whatever the archive's size).
Children are counted when they are made (``note_child``); a resumed run counts the archived ones again from their
recorded metadata (``replayed_child``), so the counts are those an uninterrupted run had.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from evolve.mutators.base import ProgramView
from evolve.search.elites import IslandElites

_PRUNE_EVERY = 1024  # children between two prunings of the counts of programs that are no longer elites


class ParentSelector:
    """Picks parents by ``policy`` and keeps the children counts the ``weighted`` policy needs."""

    def __init__(self, policy: str = "rank", *, weighted_lambda: float = 10.0, power_alpha: float = 1.0,
                 sign: float = 1.0):
        self.policy = policy
        self.weighted_lambda = weighted_lambda
        self.power_alpha = power_alpha
        self.sign = sign  # fitness = score * sign (bigger is better)
        self.children: Counter[str] = Counter()
        self._made = 0

    def pick(self, elites: Callable[[], IslandElites], rng: np.random.Generator, exploitation: float,
             sample_parent: Callable[[np.random.Generator], ProgramView], database_rate: float) -> ProgramView:
        """A parent from ``elites()`` (best first). ``sample_parent`` is the database's own draw for the island (at
        ``database_rate``): used for the rank policy at that rate, and for an empty island."""
        if self.policy == "rank" and exploitation == database_rate:
            return sample_parent(rng)
        found = elites()
        if not len(found):
            return sample_parent(rng)
        exploit = rng.random() < exploitation
        u = float(rng.random())
        n = len(found)
        if not exploit:
            return found.views[min(n - 1, int(u * n))]
        cumulative = np.cumsum(self.weights(found.ids, found.fitness, found.index))
        index = int(np.searchsorted(cumulative, u * float(cumulative[-1]), side="right"))
        return found.views[min(n - 1, index)]

    def weights(self, ids: Sequence[str], fitness: np.ndarray, index: dict[str, int] | None = None) -> np.ndarray:
        """Exploitation weights of elites (best first: ``ids`` and their ``fitness``; ``index``: id -> position,
        when known) under the policy."""
        n = len(ids)
        if self.policy == "weighted":
            median = float(np.median(fitness))
            mad = float(np.median(np.abs(fitness - median)))
            scale = max(mad, 1e-12 * max(1.0, abs(median)))
            z = np.clip(self.weighted_lambda * (fitness - median) / scale, -60.0, 60.0)
            children = self.children
            if index is not None and len(children) < n:  # few parents had children: look only those up
                tried = np.zeros(n)
                for pid, count in children.items():
                    position = index.get(pid)
                    if position is not None:
                        tried[position] = count
            else:
                tried = np.fromiter((children.get(pid, 0) for pid in ids), dtype=float, count=n)
            return 1.0 / (1.0 + np.exp(-z)) / (1.0 + tried)
        alpha = self.power_alpha if self.policy == "power" else 1.0
        return np.arange(1, n + 1, dtype=float) ** -alpha

    def note_child(self, parent_id: str, is_elite: Callable[[str], bool] | None = None) -> None:
        """Count a child just made from ``parent_id``; now and then forget programs that are no longer elites."""
        self.children[parent_id] += 1
        self._made += 1
        if is_elite is not None and self._made % _PRUNE_EVERY == 0:
            for program_id in [p for p in self.children if not is_elite(p)]:
                del self.children[program_id]

