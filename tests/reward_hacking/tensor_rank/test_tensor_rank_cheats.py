"""Hostile searches against the real tensor_rank evaluator (``run_stage``): clock patching and forked helpers
against the CPU budget, import-time and background work, swallowed interruptions, lying factor arrays, NaN and
huge numbers. The stage runs with two small targets (the evaluator's own code, shorter budgets) to keep the
suite quick."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evaluators.array_lint import check_source
from evolve.evaluation import load_evaluator
from evolve.problem import load_problem
from evolve.types import Status

from ...conftest import PROBLEMS
from ..replies.host import attack

PROGRAMS = Path(__file__).resolve().parent / "programs"
BUDGET = 0.3  # CPU seconds per target in these tests


@pytest.fixture(scope="module")
def problem():
    return load_problem(PROBLEMS / "tensor_rank")


@pytest.fixture
def evaluator(problem, monkeypatch):
    module = load_evaluator(problem)
    monkeypatch.setattr(module, "TARGETS", (module.Target((2, 2, 2), 7, BUDGET), module.Target((2, 2, 3), 11, BUDGET)))
    monkeypatch.setattr(module, "source_check", lambda candidate: None)  # the cheats' reach does not hang on it
    return module


def windows(outcome) -> list[tuple[float, float]]:
    """(CPU spent, CPU allowed) per target, as the evaluator's notes report them."""
    return [(float(a), float(b)) for a, b in re.findall(r"([\d.]+) of ([\d.]+) CPU s", outcome.artifacts["targets"])]


def grace(evaluator) -> float:
    return evaluator.CPU_GRACE + evaluator.CPU_GRACE_FRACTION * BUDGET


@pytest.mark.parametrize("program", ["import_precompute.py", "swallow_interrupt.py", "always_equal_factors.py",
                                     "nan_factors.py", "huge_number_factors.py"])
def test_these_cheats_pass_the_lint(program) -> None:
    assert check_source((PROGRAMS / program).read_text()) == []


def test_patched_clocks_and_forked_helpers_are_charged_and_killed(problem, evaluator) -> None:
    outcome = attack(problem, PROGRAMS / "forked_helpers.py", "search")  # also: no helper, daemon included, left
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] == 0.0
    assert outcome.artifacts["targets"].count("process killed") == 2
    for spent, allowed in windows(outcome):
        assert allowed - 0.05 <= spent <= allowed + grace(evaluator) + 0.3  # polled every 10 ms, four processes
    assert outcome.metrics["time_fraction"] >= 0.9  # the helpers' CPU, not the 0.0 the patched clocks say


def test_import_time_work_is_charged_to_the_budget(problem, evaluator) -> None:
    outcome = attack(problem, PROGRAMS / "import_precompute.py", "search")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] == 0.0
    assert outcome.artifacts["targets"].count("process killed") == 2  # the import never finished
    assert outcome.metrics["time_fraction"] >= 0.9


def test_background_threads_are_charged(problem, evaluator) -> None:
    outcome = attack(problem, PROGRAMS / "background_thread.py", "search")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] == 0.0
    # Interrupted or killed once the thread has spent the budget (or, on a very loaded machine, stopped by the wall
    # backstop): the sleeping search's windows are charged with the thread's work either way.
    assert all(spent >= 0.05 for spent, _ in windows(outcome))


def test_a_swallowed_interruption_ends_in_a_kill_and_the_next_target_runs(problem, evaluator) -> None:
    outcome = attack(problem, PROGRAMS / "swallow_interrupt.py", "search")
    assert outcome.status is Status.OK, outcome
    assert outcome.artifacts["targets"].count("process killed") == 2
    assert all(spent <= allowed + grace(evaluator) + 0.15 for spent, allowed in windows(outcome))


@pytest.mark.parametrize("program", ["always_equal_factors.py", "nan_factors.py"])
def test_lying_and_nan_factors_score_zero(problem, evaluator, program) -> None:
    outcome = attack(problem, PROGRAMS / program, "search")
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] == 0.0
    assert outcome.artifacts["targets"].count("target scores 0") == 2


def test_huge_numbers_are_wrong_output(problem, evaluator) -> None:
    outcome = attack(problem, PROGRAMS / "huge_number_factors.py", "search")
    assert outcome.status is Status.WRONG_OUTPUT, outcome
    assert "not an array" in outcome.message
