"""evolve/worker.py: how a stage task labels what goes wrong on its node."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve import worker
from evolve.problem import load_problem
from evolve.sandbox import SandboxUnavailable
from evolve.types import Status

ROOT = Path(__file__).resolve().parents[1]


def test_a_node_below_the_sandbox_floor_is_a_system_error_naming_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = load_problem(ROOT / "problems" / "circle_packing")

    def below_floor(*_: object) -> None:
        raise SandboxUnavailable("sandbox.require = 'full' cannot be met on this host: missing landlock (kernel 5.4)")

    monkeypatch.setattr(worker, "make_stage_sandbox", below_floor)
    data = worker._evaluate_stage(problem, problem.stages[0].name, problem.seed_code(), "p" * 16, 0, None)
    assert data["status"] == Status.SYSTEM_ERROR.value  # never the candidate's or the evaluator's fault
    assert "cannot run candidates" in data["message"] and "missing landlock" in data["message"]


def test_stage_tasks_never_collected_are_handed_to_whoever_waits_for_them(ray_session) -> None:
    """The warm runner waits for what a stopped run left in flight before its next run (evolve.runner_process)."""
    problem = load_problem(ROOT / "problems" / "circle_packing")
    executor = worker.RayStageExecutor(problem)
    worker.take_uncollected()
    collected = executor.submit(0, problem.seed_code(), "a" * 16, 1)
    left = executor.submit(0, problem.seed_code(), "b" * 16, 1)
    assert executor.result(collected, 0).status is Status.OK
    assert worker.take_uncollected() == [left]
    assert worker.take_uncollected() == []  # handed over once
    assert executor.result(left, 0).status is Status.OK
