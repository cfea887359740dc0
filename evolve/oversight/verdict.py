"""``evolve eval``'s verdict: one program's standing, decided here (no Ray) as a run would decide it.

After the visible stages passed, the held-out stages run on their own seed and the visible cascade runs again
``reevaluations`` times with other seeds; ``judge`` turns the figures into a standing, printed with the visible and
held-out figures side by side. Tripwires that need a run's history (the jump) cannot fire here; the bound and
evaluator-declared anomalies do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evolve.evaluation import run_cascade, split_anomaly
from evolve.oversight.standing import CascadeResult, Standing, Verdict, anomaly_hits, bound_hit, judge
from evolve.problem import Problem, StageSpec
from evolve.types import StageOutcome
from evolve.worker import heldout_seed, reevaluation_seed


@dataclass(frozen=True)
class EvalVerdict:
    verdict: Verdict
    visible_metric: str
    heldout_metric: str
    heldout: CascadeResult | None
    reevaluations: tuple[CascadeResult, ...]
    skipped: str = ""  # why the held-out stages did not run here (a GPU stage without a GPU)

    @property
    def standing(self) -> Standing:
        return self.verdict.standing

    def to_dict(self) -> dict[str, Any]:
        return {"standing": self.standing.value, "reasons": list(self.verdict.reasons),
                "visible_metric": self.visible_metric, "heldout_metric": self.heldout_metric,
                **self.verdict.numbers(), "tripwires": [h.to_dict() for h in self.verdict.tripwires],
                "heldout_stages": [o.to_dict() for o in self.heldout.outcomes] if self.heldout else [],
                "skipped": self.skipped}

    def lines(self) -> list[str]:
        v = self.verdict
        out = [f"standing: {v.standing.value}"]
        side = f"  visible {self.visible_metric} = {_num(v.visible)}"
        if self.heldout is not None:
            side += f"    held-out {self.heldout_metric} = {_num(v.heldout)}"
            if v.behind is not None:
                side += f"    (behind by {_num(v.behind)}, allowance {_num(v.allowance)})"
            elif not self.heldout.ok:
                side += f"    ({self.heldout.message})"
        elif self.skipped:
            side += f"    held-out: not run ({self.skipped})"
        out.append(side)
        if self.reevaluations:
            values = ", ".join(_num(x) for x in v.reevaluated)
            out.append(f"  re-evaluations with other seeds: {values} (largest difference {_num(v.spread)}, "
                       f"allowance {_num(v.reproduce_allowance)})")
        out += [f"  - {reason}" for reason in v.reasons]
        return out


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _cascade(problem: Problem, stages: Sequence[StageSpec], code: str, program_id: str, seed: int) -> CascadeResult:
    outcomes, anomalies = [], []
    for outcome in run_cascade(problem, stages, code, program_id, seed):
        outcome, anomaly = split_anomaly(outcome)
        outcomes.append(outcome)
        if anomaly:
            anomalies.append((outcome.stage, anomaly))
    return CascadeResult(tuple(outcomes), tuple(anomalies))


def eval_verdict(problem: Problem, code: str, program_id: str, visible: Sequence[StageOutcome], seed: int,
                 gpu: bool = True) -> EvalVerdict:
    """The standing of a program whose visible stages (``visible``, every one passed) ran with ``seed``."""
    runs = [split_anomaly(o) for o in visible]
    metrics: dict[str, float] = {}
    for outcome, _ in runs:
        metrics.update(outcome.metrics)
    arrival = anomaly_hits([(o.stage, a) for o, a in runs if a], "visible")
    bound = bound_hit(problem.score, metrics.get(problem.score.metric))
    heldout, skipped = None, ""
    if problem.heldout_stages:
        needs_gpu = [s.name for s in problem.heldout_stages if s.gpus]
        if needs_gpu and not gpu:
            skipped = f"held-out stage(s) {', '.join(needs_gpu)} need a GPU; no CUDA device found here"
        else:
            heldout = _cascade(problem, problem.heldout_stages, code, program_id, heldout_seed(seed, program_id))
    needs_gpu_visible = any(s.gpus for s in problem.stages) and not gpu
    reevaluations = () if needs_gpu_visible else tuple(
        _cascade(problem, problem.stages, code, program_id, reevaluation_seed(seed, program_id, i))
        for i in range(problem.oversight.reevaluations))
    verdict = judge(problem.oversight, problem.score.sign, metrics.get(problem.visible_metric), heldout,
                    problem.heldout_metric, reevaluations, problem.visible_metric)
    if skipped:
        reasons = tuple(r for r in verdict.reasons if not r.startswith("nothing to check"))
        verdict = dataclasses.replace(verdict, reasons=reasons + (f"held-out not checked: {skipped}",),
                                      inconclusive=skipped)
        if verdict.standing is Standing.PROMOTED:
            verdict = dataclasses.replace(verdict, standing=Standing.CANDIDATE)
    hits = [*arrival, *([bound] if bound else [])]
    if hits:
        verdict = dataclasses.replace(verdict, standing=Standing.QUARANTINED,
                                      reasons=tuple(h.message for h in hits) + verdict.reasons,
                                      tripwires=tuple(hits) + verdict.tripwires)
    return EvalVerdict(verdict, problem.visible_metric, problem.heldout_metric, heldout, reevaluations, skipped)
