"""Standings and tripwires as pure functions: what a check's numbers mean for a program.

A program's *standing* says whether its visible score can be trusted:

* ``candidate``: never checked (the default);
* ``promoted``: its held-out figure agrees with its visible score within the problem's allowance, and its score
  reproduced across re-evaluations with other seeds;
* ``overfit``: it passes the benchmark but breaks on held-out data (a held-out stage failed, or its figure falls
  further behind the visible score than the allowance);
* ``flaky``: its score does not reproduce across re-evaluations with other seeds;
* ``quarantined``: a tripwire fired (a score beyond the declared bound, a jump far beyond the run's recent
  improvements, a visible/held-out gap beyond the declared one, or an evaluator-declared anomaly).

Overfit and quarantined programs are never parents or inspirations; "best" means best promoted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from evolve.problem import OversightSpec, ScoreSpec
from evolve.types import StageOutcome, Status


class Standing(StrEnum):
    CANDIDATE = "candidate"
    PROMOTED = "promoted"
    OVERFIT = "overfit"
    FLAKY = "flaky"
    QUARANTINED = "quarantined"

    @property
    def excluded(self) -> bool:
        """Never a parent, an inspiration or a migrant."""
        return self in (Standing.OVERFIT, Standing.QUARANTINED)


class Tripwire(StrEnum):
    BOUND = "bound"  # a score beyond [score] bound
    JUMP = "jump"  # an improvement of the run's best far beyond its recent improvements
    GAP = "gap"  # |visible - held-out| beyond [oversight] gap
    ANOMALY = "anomaly"  # the evaluator declared the result suspicious (StageReport.anomaly)

    @property
    def auto_release(self) -> bool:
        """Whether a check that finds nothing wrong lifts the quarantine. A score beyond a physical bound, or a
        held-out gap found by the check itself, is lifted only by a person (``evolve archive release``)."""
        return self in (Tripwire.JUMP, Tripwire.ANOMALY)


@dataclass(frozen=True)
class TripwireHit:
    """One tripwire that fired, with the numbers that made it fire."""

    kind: Tripwire
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tripwire": self.kind.value, "message": self.message, **self.numbers}


CANDIDATE_FAULTLESS = (Status.EVALUATOR_ERROR, Status.SYSTEM_ERROR)  # an inconclusive run, not the program's fault


@dataclass(frozen=True)
class CascadeResult:
    """One run of a cascade (the held-out stages, or a re-evaluation of the visible ones) for one program."""

    outcomes: tuple[StageOutcome, ...]
    anomalies: tuple[tuple[str, str], ...] = ()  # (stage, why), taken out of the outcomes

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.passed for o in self.outcomes)

    @property
    def status(self) -> Status:
        return Status.OK if self.ok else (self.outcomes[-1].status if self.outcomes else Status.SYSTEM_ERROR)

    @property
    def message(self) -> str:
        last = self.outcomes[-1] if self.outcomes else None
        return "" if last is None else f"stage {last.stage!r} {last.status.value}: {last.message}".rstrip(": ")

    @property
    def metrics(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for outcome in self.outcomes:
            merged.update(outcome.metrics)
        return merged

    @property
    def inconclusive(self) -> bool:
        return not self.ok and self.status in CANDIDATE_FAULTLESS


@dataclass(frozen=True)
class Verdict:
    """What a check found: the standing it gives, why, and every number behind it."""

    standing: Standing
    reasons: tuple[str, ...]
    visible: float | None = None  # the visible metric the check compared
    heldout: float | None = None  # the held-out metric (None: no held-out stage, or it failed)
    behind: float | None = None  # how far held-out falls behind visible, in the score's direction
    allowance: float | None = None
    heldout_agrees: bool | None = None  # None: no held-out stage declared, or inconclusive
    reevaluated: tuple[float | None, ...] = ()  # the visible metric on each re-evaluation (None: it failed)
    reproduces: bool | None = None  # None: no re-evaluation declared
    spread: float | None = None  # largest |re-evaluated - visible|
    reproduce_allowance: float | None = None
    tripwires: tuple[TripwireHit, ...] = ()
    inconclusive: str = ""  # why the check could not decide (an evaluator or infrastructure failure)

    def numbers(self) -> dict[str, Any]:
        return {"visible": self.visible, "heldout": self.heldout, "behind": self.behind, "allowance": self.allowance,
                "heldout_agrees": self.heldout_agrees, "reevaluated": list(self.reevaluated),
                "reproduces": self.reproduces, "spread": self.spread,
                "reproduce_allowance": self.reproduce_allowance}


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def anomaly_hits(anomalies: Iterable[tuple[str, str]], where: str) -> list[TripwireHit]:
    return [TripwireHit(Tripwire.ANOMALY, f"the evaluator flagged {where} stage {stage!r}: {why}",
                        {"stage": stage, "anomaly": why, "where": where}) for stage, why in anomalies]


def bound_hit(score_spec: ScoreSpec, score: float | None) -> TripwireHit | None:
    if score is None or not score_spec.beyond_bound(score):
        return None
    side = "above" if score_spec.sign > 0 else "below"
    return TripwireHit(Tripwire.BOUND, f"score {score:.8g} is {side} the declared bound {score_spec.bound:.8g}",
                       {"score": score, "bound": score_spec.bound})


def judge(spec: OversightSpec, sign: float, visible: float | None, heldout: CascadeResult | None,
          heldout_metric: str, reevaluations: Sequence[CascadeResult], visible_metric: str) -> Verdict:
    """The verdict of a check. ``heldout`` is None when the problem declares no held-out stage."""
    reasons: list[str] = []
    hits: list[TripwireHit] = []
    inconclusive: list[str] = []
    overfit = flaky = False
    h = behind = allowance = None
    agrees: bool | None = None
    if visible is None:
        return Verdict(Standing.CANDIDATE, ("no visible figure to compare",), inconclusive="no visible figure")
    if heldout is not None:
        hits += anomaly_hits(heldout.anomalies, "held-out")
        if heldout.inconclusive:
            inconclusive.append(f"held-out run inconclusive: {heldout.message}")
        elif not heldout.ok:
            overfit, agrees = True, False
            reasons.append(f"breaks on held-out data: {heldout.message}")
        else:
            raw = heldout.metrics.get(heldout_metric)
            h = _finite(raw)
            if raw is None:
                inconclusive.append(f"the held-out stages returned no {heldout_metric!r} metric")
            elif h is None:
                overfit, agrees = True, False
                reasons.append(f"held-out {heldout_metric} is {raw}")
            else:
                behind = (visible - h) * sign
                allowance = spec.allowance(visible)
                agrees = behind <= allowance
                if agrees:
                    reasons.append(f"held-out {heldout_metric} {h:.6g} agrees with visible {visible_metric} "
                                   f"{visible:.6g} (behind by {behind:.3g}, allowance {allowance:.3g})")
                else:
                    overfit = True
                    reasons.append(f"held-out {heldout_metric} {h:.6g} falls {behind:.3g} behind visible "
                                   f"{visible_metric} {visible:.6g} (allowance {allowance:.3g})")
                if spec.gap is not None and abs(visible - h) > spec.gap:
                    hits.append(TripwireHit(Tripwire.GAP, f"visible {visible:.6g} and held-out {h:.6g} differ by "
                                            f"{abs(visible - h):.3g}, beyond the declared gap {spec.gap:.3g}",
                                            {"visible": visible, "heldout": h, "gap": spec.gap}))
    values: list[float | None] = []
    spread = reproduce_allowance = None
    reproduces: bool | None = None
    if reevaluations:
        reproduce_allowance = spec.reproduce_allowance(visible)
        reproduces = True
        for i, run in enumerate(reevaluations, 1):
            hits += anomaly_hits(run.anomalies, f"re-evaluation {i}")
            value = _finite(run.metrics.get(visible_metric)) if run.ok else None
            values.append(value)
            if run.inconclusive:
                inconclusive.append(f"re-evaluation {i} inconclusive: {run.message}")
                continue
            if value is None:
                reproduces = False
                reasons.append(f"re-evaluation {i} with another seed failed: {run.message or 'no score'}")
                continue
            spread = max(spread or 0.0, abs(value - visible))
            if abs(value - visible) > reproduce_allowance:
                reproduces = False
                reasons.append(f"re-evaluation {i} with another seed scored {value:.6g}, not {visible:.6g} "
                               f"(allowance {reproduce_allowance:.3g})")
        flaky = not reproduces
        if reproduces:
            reasons.append(f"score reproduced on {len(reevaluations)} re-evaluation(s) with other seeds")
    if hits:
        standing = Standing.QUARANTINED
        reasons = [h.message for h in hits] + reasons
    elif overfit:
        standing = Standing.OVERFIT
    elif flaky:
        standing = Standing.FLAKY
    elif inconclusive:
        standing = Standing.CANDIDATE
    else:
        standing = Standing.PROMOTED
        if heldout is None and not reevaluations:
            reasons.append("nothing to check: the problem declares no held-out stage and no re-evaluation")
    return Verdict(standing, tuple(reasons + inconclusive), visible, h, behind, allowance, agrees, tuple(values),
                   reproduces, spread, reproduce_allowance, tuple(hits), "; ".join(inconclusive))


class JumpWatch:
    """The jump tripwire: an improvement of the run's best visible fitness far beyond its recent improvements.

    Improvements are differences between successive bests (programs that tripped a tripwire when they arrived
    excluded). Once ``jump_history`` improvements are known, a new best whose improvement exceeds ``jump`` times the
    largest of the last ``jump_window`` ones fires. Constant memory and cost per program."""

    def __init__(self, spec: OversightSpec):
        self.factor = spec.jump
        self.history = spec.jump_history
        self.best: float | None = None
        self.recent: deque[float] = deque(maxlen=spec.jump_window)
        self.seen = 0  # improvements ever recorded

    def check(self, fitness: float) -> TripwireHit | None:
        """The tripwire hit for a new program's fitness, if it fires (nothing is recorded)."""
        if self.factor is None or self.best is None or fitness <= self.best or self.seen < self.history:
            return None
        jump, largest = fitness - self.best, max(self.recent)
        if largest > 0 and jump > self.factor * largest:
            return TripwireHit(Tripwire.JUMP, f"improvement {jump:.4g} of the run's best is more than "
                               f"{self.factor:g} x the largest of its last {len(self.recent)} improvements "
                               f"({largest:.4g})", {"improvement": jump, "recent_largest": largest,
                                                    "factor": self.factor, "previous_best": self.best})
        return None

    def record(self, fitness: float) -> None:
        """A program that tripped nothing arrived with this fitness."""
        if self.best is None:
            self.best = fitness
        elif fitness > self.best:
            self.recent.append(fitness - self.best)
            self.seen += 1
            self.best = fitness

    def replay(self, fitnesses: Iterable[float]) -> None:
        for value in fitnesses:
            self.record(value)
