"""Which model of the ensemble answers the next request: fixed weights, or a bandit that learns.

Fixed weights: each call draws a model with probability weight / sum(weights) (a fast model for most calls, a
strong one sometimes). Bandit: Thompson sampling on the chance that a model's child improves on its parent. Each
model keeps a Beta(1 + improved, 1 + not improved) posterior (an unusable answer counts as not improved); a call
samples every posterior and takes the best draw. ``cost_weight`` divides a draw by ``1 + cost_weight * c`` where
``c`` is the model's mean cost per call relative to the costliest model (so with weight 1 the costliest model must
improve twice as often as a free one to win). A share ``explore`` of calls still follows the fixed weights, so no
model is starved of evidence while the run's conditions change.

All draws use the generator passed in (seeded from the request's seed), so the same state and seed choose the same
model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolve.llm.settings import ModelSpec


@dataclass
class _Arm:
    chosen: int = 0
    improved: int = 0
    not_improved: int = 0
    cost: float = 0.0  # total cost of the answers observed
    answers: int = 0


class ModelChooser:
    """Thread-safe model choice."""

    def __init__(self, models: Sequence[ModelSpec], bandit: bool = False, cost_weight: float = 0.0,
                 explore: float = 0.1):
        if not models:
            raise ValueError("at least one model is needed")
        self.models = tuple(models)
        self.bandit = bandit
        self.cost_weight = cost_weight
        self.explore = explore
        weights = np.array([m.weight for m in self.models], dtype=float)
        self._p = weights / weights.sum()
        self._arms = {m.name: _Arm() for m in self.models}
        self._lock = threading.Lock()

    def choose(self, rng: np.random.Generator) -> ModelSpec:
        with self._lock:
            if len(self.models) == 1:
                index = 0
            elif not self.bandit or rng.random() < self.explore:
                index = int(rng.choice(len(self.models), p=self._p))
            else:
                index = int(np.argmax(self._scores(rng)))
            spec = self.models[index]
            self._arms[spec.name].chosen += 1
            return spec

    def _scores(self, rng: np.random.Generator) -> np.ndarray:
        arms = [self._arms[m.name] for m in self.models]
        draws = np.array([rng.beta(1 + a.improved, 1 + a.not_improved) for a in arms])
        if self.cost_weight > 0:
            mean_cost = np.array([a.cost / a.answers if a.answers else 0.0 for a in arms])
            top = mean_cost.max()
            if top > 0:
                draws = draws / (1.0 + self.cost_weight * mean_cost / top)
        return draws

    def cost(self, model: str, cost: float) -> None:
        """Account the cost of one answer of ``model`` (for the cost-aware bandit)."""
        with self._lock:
            arm = self._arms.get(model)
            if arm is not None:
                arm.cost += cost
                arm.answers += 1

    def update(self, model: str, improved: bool) -> None:
        """Feed back whether ``model``'s child improved on its parent."""
        with self._lock:
            arm = self._arms.get(model)
            if arm is None:
                return
            if improved:
                arm.improved += 1
            else:
                arm.not_improved += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                name: {
                    "chosen": a.chosen,
                    "improved": a.improved,
                    "not_improved": a.not_improved,
                    "improvement_rate_posterior": (1 + a.improved) / (2 + a.improved + a.not_improved),
                }
                for name, a in self._arms.items()
            }
