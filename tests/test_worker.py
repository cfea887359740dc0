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
