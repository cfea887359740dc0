"""Hostile packings against the real circle_packing evaluator (``run_stage``): lying reply objects, NumPy
subclasses, NaN tricks and numbers too large for a float. Each is the candidate's ``wrong_output``, with a reason,
never the evaluator's fault, and never a score."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.problem import load_problem
from evolve.types import Status

from ...conftest import PROBLEMS
from ..replies.host import attack

PROGRAMS = Path(__file__).resolve().parent / "programs"


@pytest.fixture(scope="module")
def problem():
    return load_problem(PROBLEMS / "circle_packing")


@pytest.mark.parametrize(("program", "reason"), [
    ("huge_radius.py", "real numbers"),
    ("huge_int_centers.py", "real numbers"),
    ("nan_radii.py", "NaN"),
    ("lying_floats.py", "overlap"),
    ("numpy_subclass.py", "real numbers"),
    ("overlapping_subclass.py", "leaves the unit square"),
])
def test_hostile_packings_are_wrong_output(problem, program, reason) -> None:
    outcome = attack(problem, PROGRAMS / program, "validate")
    assert outcome.status is Status.WRONG_OUTPUT, outcome
    assert reason in outcome.message
    assert not outcome.metrics


def test_the_seed_still_scores(problem) -> None:
    outcome = attack(problem, problem.seed_path, "validate")
    assert outcome.status is Status.OK, outcome
    assert 0 < outcome.metrics["sum_radii"] < 2.7
