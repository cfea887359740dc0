"""Adaptive search, bounded: per island, a discounted UCB bandit over the exploitation rate and one over the mutation
kind, in the spirit of AdaEvolve (adapt each island's exploration to the progress it observes).

Arms never leave the declared ranges: exploitation arms are ``levels`` values spread over ``[low, high]``; kind arms
are the kinds of the declared ``mutation_mix``, and with probability ``min_share * kinds`` a kind is drawn uniformly,
so every declared kind keeps at least ``min_share`` of the children. The reward of a child is 1 when it beats its
parent, else 0 (an unusable answer, a failure, a copy: 0). Each island's statistics decay by ``discount`` per outcome
observed there, so an island whose best choice changes mid-run follows it.

Choices are a function of the statistics (updated in integration order) and of the generator passed in: with
``--deterministic`` a run is reproducible, and a resumed run replays the archived outcomes to get the same state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evolve.search.settings import AdaptiveSettings


@dataclass
class _Ucb:
    """Discounted UCB1 over ``n`` arms."""

    n: int
    discount: float
    explore: float
    counts: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = [0.0] * self.n
        self.rewards = [0.0] * self.n

    def choose(self) -> int:
        for arm, count in enumerate(self.counts):
            if count < 1e-9:
                return arm  # every arm is tried once first, in order
        total = sum(self.counts)
        scores = [self.rewards[a] / self.counts[a] + self.explore * math.sqrt(math.log(max(total, 1.0)) /
                                                                              self.counts[a]) for a in range(self.n)]
        return int(np.argmax(scores))  # ties: the lowest arm

    def update(self, arm: int, reward: float) -> None:
        for a in range(self.n):
            self.counts[a] *= self.discount
            self.rewards[a] *= self.discount
        self.counts[arm] += 1.0
        self.rewards[arm] += reward

    def snapshot(self) -> list[dict[str, float]]:
        return [{"weight": round(c, 3), "mean": round(r / c, 4) if c > 1e-9 else 0.0}
                for c, r in zip(self.counts, self.rewards, strict=True)]


@dataclass(frozen=True)
class AdaptiveChoice:
    """What the bandit chose for one child (recorded with it)."""

    exploitation: float
    level: int | None  # the exploitation arm, None when not the bandit's choice
    kind: str
    kind_arm: int | None  # the kind arm, None when drawn for the minimum share or not the bandit's choice


class IslandBandits:
    """The bandits of every island."""

    def __init__(self, settings: AdaptiveSettings, kinds: tuple[str, ...], islands: int):
        self.settings = settings
        low, high = settings.exploitation
        self.levels = tuple(float(v) for v in np.linspace(low, high, settings.levels)) if settings.levels > 1 \
            else ((low + high) / 2,)
        self.kinds = kinds
        self._rate = [_Ucb(len(self.levels), settings.discount, settings.explore) for _ in range(islands)]
        self._kind = [_Ucb(len(kinds), settings.discount, settings.explore) if kinds else None
                      for _ in range(islands)]

    def choose(self, island: int, rng: np.random.Generator) -> AdaptiveChoice:
        """Two draws of ``rng``, always (so the stream after them does not depend on the branch taken)."""
        u_share, u_pick = float(rng.random()), float(rng.random())
        level = self._rate[island].choose()
        kind, kind_arm = "", None
        bandit = self._kind[island]
        if bandit is not None:
            if u_share < self.settings.min_share * len(self.kinds):
                kind = self.kinds[min(len(self.kinds) - 1, int(u_pick * len(self.kinds)))]
            else:
                kind_arm = bandit.choose()
                kind = self.kinds[kind_arm]
        return AdaptiveChoice(self.levels[level], level, kind, kind_arm)

    def observe(self, island: int, level: int | None, kind_arm: int | None, improved: bool) -> None:
        if not 0 <= island < len(self._rate):
            return
        reward = 1.0 if improved else 0.0
        if level is not None and 0 <= level < len(self.levels):
            self._rate[island].update(level, reward)
        bandit = self._kind[island]
        if bandit is not None and kind_arm is not None and 0 <= kind_arm < len(self.kinds):
            bandit.update(kind_arm, reward)

    def snapshot(self) -> list[dict[str, Any]]:
        out = []
        for island, rate in enumerate(self._rate):
            kind = self._kind[island]
            out.append({
                "island": island,
                "exploitation": [{"value": v, **s} for v, s in zip(self.levels, rate.snapshot(), strict=True)],
                "kinds": [{"kind": k, **s} for k, s in zip(self.kinds, kind.snapshot(), strict=True)] if kind else [],
            })
        return out


def clamp_mix(mix: dict[str, float], declared: dict[str, float], min_share: float) -> dict[str, float]:
    """``mix`` restricted to the declared kinds, normalised, with every declared kind at ``min_share`` at least.
    Kinds that were not declared stay out whatever ``mix`` says (a strategy cannot add one)."""
    kinds = list(declared)
    raw = {k: max(0.0, float(mix.get(k, 0.0))) for k in kinds}
    total = sum(raw.values())
    if total <= 0:
        return dict(declared)
    share = {k: v / total for k, v in raw.items()}
    floor = min(min_share, 1.0 / len(kinds))
    free = 1.0 - floor * len(kinds)
    return {k: floor + free * share[k] for k in kinds}


def draw_kind(mix: dict[str, float], u: float) -> str:
    """The kind whose cumulative interval of ``mix`` (in its own order) holds ``u``."""
    total = 0.0
    last = ""
    for kind, weight in mix.items():
        total += weight
        last = kind
        if u < total:
            return kind
    return last
