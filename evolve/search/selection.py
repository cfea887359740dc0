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

import bisect
import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from evolve.mutators.base import ProgramView

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
        self._fitness: tuple[object, np.ndarray] = (None, np.zeros(0))  # the last views' fitness (same tuple: reused)

    def pick(self, elites: Callable[[], Sequence[ProgramView]], rng: np.random.Generator, exploitation: float,
             sample_parent: Callable[[np.random.Generator], ProgramView], database_rate: float) -> ProgramView:
        """A parent from ``elites()`` (best first). ``sample_parent`` is the database's own draw for the island (at
        ``database_rate``): used for the rank policy at that rate, and for an empty island."""
        if self.policy == "rank" and exploitation == database_rate:
            return sample_parent(rng)
        views = elites()
        if not views:
            return sample_parent(rng)
        exploit = rng.random() < exploitation
        u = float(rng.random())
        n = len(views)
        if not exploit:
            return views[min(n - 1, int(u * n))]
        weights = self.weights(views)
        cumulative = np.cumsum(weights)
        index = bisect.bisect_right(cumulative.tolist(), u * float(cumulative[-1]))
        return views[min(n - 1, index)]

    def weights(self, views: Sequence[ProgramView]) -> np.ndarray:
        """Exploitation weights of ``views`` (best first) under the policy."""
        n = len(views)
        if self.policy == "weighted":
            if self._fitness[0] is views:
                fitness = self._fitness[1]
            else:
                fitness = np.array([_fitness(v, self.sign) for v in views], dtype=float)
                self._fitness = (views, fitness)
            median = float(np.median(fitness))
            mad = float(np.median(np.abs(fitness - median)))
            scale = max(mad, 1e-12 * max(1.0, abs(median)))
            z = np.clip(self.weighted_lambda * (fitness - median) / scale, -60.0, 60.0)
            tried = np.array([self.children.get(v.program_id, 0) for v in views], dtype=float)
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


def _fitness(view: ProgramView, sign: float) -> float:
    # Elites always hold a finite score; anything else ranks last.
    if view.score is None or not math.isfinite(view.score):
        return -1e300
    return float(view.score) * sign
