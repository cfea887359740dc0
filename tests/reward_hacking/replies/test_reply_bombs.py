"""Replies built to hurt the trusted side (``evolve/channel.py``, ``SandboxProcess.exchange``), sent to the real
circle_packing evaluator: size and depth bombs, numbers no parser should take, lying array descriptors. Each is
the candidate's ``wrong_output`` (never the evaluator's fault), refused before anything large is built: the
trusted process's memory stays bounded and nothing is left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.problem import load_problem
from evolve.types import Status

from ...conftest import PROBLEMS
from .host import attack

PROGRAMS = Path(__file__).resolve().parent / "programs"
FORGE = (PROGRAMS / "forge.py.txt").read_text()


@pytest.fixture(scope="module")
def problem():
    return load_problem(PROBLEMS / "circle_packing")


@pytest.mark.parametrize(("program", "reason"), [
    ("empty_objects_direct.py", "larger than"),  # 63 MB: over the 8 MB default before anything is counted
    ("empty_objects_returned.py", "lists/dicts"),
    ("deep_direct.py", "levels deep"),
    ("deep_returned.py", "levels deep"),
    ("huge_int_direct.py", "not valid JSON"),
    ("array_lies_direct.py", "does not fit"),
    ("object_dtype_direct.py", "not a numeric dtype"),
    ("oversized_payload_direct.py", "larger than"),
])
def test_reply_bombs_are_refused_as_wrong_output(problem, program, reason) -> None:
    prefix = FORGE if program.endswith("_direct.py") else ""
    outcome = attack(problem, PROGRAMS / program, "validate", prefix=prefix)
    assert outcome.status is Status.WRONG_OUTPUT, outcome
    assert reason in outcome.message
    assert not outcome.metrics


def test_an_honest_candidate_still_evaluates_after_the_bombs(problem) -> None:
    outcome = attack(problem, problem.seed_path, "validate")
    assert outcome.status is Status.OK, outcome
