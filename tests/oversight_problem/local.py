"""A stand-in for ``evolve.worker.RayStageExecutor`` that evaluates each stage here, at once, through the real
``run_stage`` (the candidate still runs in the sandbox): loop and oversight tests without Ray's start-up."""

from __future__ import annotations

import itertools
from typing import Any

from evolve.evaluation import run_stage
from evolve.problem import Problem, StageSpec
from evolve.types import StageOutcome


class LocalExecutor:
    def __init__(self, problem: Problem):
        self.problem = problem
        self._done: dict[int, StageOutcome] = {}
        self._ids = itertools.count()
        self.submitted: list[tuple[str, str, int]] = []  # (stage, program_id, seed), in order

    def submit(self, stage_index: int, code: str, program_id: str, seed: int) -> int:
        return self.submit_stage(self.problem.stages[stage_index], code, program_id, seed)

    def submit_stage(self, stage: StageSpec, code: str, program_id: str, seed: int) -> int:
        ref = next(self._ids)
        self.submitted.append((stage.name, program_id, seed))
        self._done[ref] = run_stage(self.problem, stage.name, code, program_id, seed)
        return ref

    @staticmethod
    def wait(refs: list[Any], timeout: float) -> list[Any]:
        return list(refs)

    def result(self, ref: int, stage_index: int) -> StageOutcome | None:
        return self._done.pop(ref)

    def stage_result(self, ref: int, stage: StageSpec) -> StageOutcome | None:
        return self._done.pop(ref)
