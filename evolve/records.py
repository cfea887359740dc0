"""One iteration in progress (``Child``) and the archive row it ends as (``build_record``)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from evolve.database import cell_of
from evolve.evaluation import feature_values
from evolve.mutators.base import MutationRequest, ProgramView, Proposal
from evolve.problem import Problem
from evolve.schema import ProgramRecord
from evolve.types import StageOutcome, Status


@dataclass
class Child:
    """One iteration in progress: from mutation to its final record."""

    iteration: int
    island: int
    parent: ProgramView | None
    inspirations: tuple[str, ...] = ()
    request: MutationRequest | None = None
    proposal: Proposal | None = None
    code: str = ""
    program_id: str = ""
    edit_error: str = ""
    mutate_seconds: float = 0.0
    stage_index: int = 0
    outcomes: list[StageOutcome] = field(default_factory=list)
    attempts: int = 0
    asks: int = 0  # times the mutator was asked again after it got no answer (LLM endpoint failures)
    record: ProgramRecord | None = None
    replayed: bool = False  # deterministic resume: the record is already in the archive, only re-integrated
    anomalies: list[tuple[str, str]] = field(default_factory=list)  # (stage, why): evaluator-declared, never archived


def build_record(problem: Problem, child: Child, run_id: str, default_mutator: str) -> ProgramRecord:
    """The archive row of a finished child (every stage's metrics and artifacts, its status, cell and fitness)."""
    metrics: dict[str, float] = {}
    for outcome in child.outcomes:
        metrics.update(outcome.metrics)
    last = child.outcomes[-1]
    status = Status.OK if all(o.passed for o in child.outcomes) else last.status
    metric = problem.score.metric
    score = metrics.get(metric)
    features = feature_values(problem, metrics, child.code) if status is Status.OK else {}
    cell = cell_of(problem.features, features) if status is Status.OK else None
    artifacts: dict[str, str] = {}
    if status is Status.OK:
        # An "ok" program must be placeable: a score to rank it by and a value for every feature axis.
        missing = [dim.name for dim in problem.features if dim.name not in features]
        if score is None:
            status, artifacts["message"] = Status.EVALUATOR_ERROR, f"the evaluator returned no {metric!r} metric"
        elif not math.isfinite(score):
            status, artifacts["message"] = Status.WRONG_OUTPUT, f"the score {metric!r} is {score}"
        elif missing:
            status = Status.EVALUATOR_ERROR
            artifacts["message"] = f"no value for feature(s) {', '.join(missing)} in the evaluator's metrics"
    if score is not None and not math.isfinite(score):
        score = None
    if status is not Status.OK:
        cell = None
    fitness = score * problem.score.sign if status is Status.OK and score is not None else None
    for outcome in child.outcomes:
        for name, text in outcome.artifacts.items():
            artifacts[f"{outcome.stage}.{name}" if len(child.outcomes) > 1 else name] = text
        if outcome.message and not outcome.passed:
            artifacts.setdefault("message", outcome.message)
    proposal = child.proposal
    parent = child.parent
    return ProgramRecord(
        program_id=child.program_id,
        parent_ids=((parent.program_id,) + child.inspirations) if parent else (),
        island=child.island,
        iteration=child.iteration,
        generation=(parent.generation + 1) if parent else 0,
        code=child.code,
        status=status.value,
        edit=proposal.response if proposal else "",
        edit_error=child.edit_error,
        mutator=proposal.mutator if proposal else ("seed" if parent is None else default_mutator),
        score=score,
        fitness=fitness,
        metrics=metrics,
        features=features,
        cell=cell,
        stages=[o.to_dict() for o in child.outcomes],
        artifacts=artifacts,
        isolation=next((o.isolation for o in child.outcomes if o.isolation), ""),
        in_process=any(o.in_process for o in child.outcomes),
        prompt=proposal.prompt if proposal else "",
        llm=dict(proposal.llm) if proposal else {},
        mutate_seconds=child.mutate_seconds,
        eval_seconds=sum(o.seconds for o in child.outcomes),
        created_at=time.time(),
        run_id=run_id,
    )


def replayed_child(child: Child, row: dict[str, Any]) -> None:
    """Fill ``child`` from its archived row (deterministic resume): the proposal as it was answered, the record as
    it was written. The mutator is not asked again (an LLM call is not paid twice)."""
    record = ProgramRecord.from_row(row)
    child.record = record
    child.replayed = True
    child.program_id = record.program_id
    child.code = record.code
    child.edit_error = record.edit_error
    child.mutate_seconds = record.mutate_seconds
    child.proposal = Proposal(response=record.edit, mutator=record.mutator, prompt=record.prompt,
                              llm=json.loads(json.dumps(record.llm)), child_code=record.code or None)


def queued_for_evaluation(record: ProgramRecord) -> bool:
    """Whether the live run evaluated this child (so its id was in flight while its batch was proposed)."""
    return Status(record.status).evaluated
