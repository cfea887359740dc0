"""Hostile optimizers against the real evaluator (``run_stage``): data capture through the array module, frame and
module walking, lying parameters and NaN tricks. Each cheat falls back to the seed's own update when its attack
finds nothing, so "gains nothing" is exact: it scores the seed's score, never more. Most pass the lint
(``evaluators/array_lint.py``), which shows that the lint is no boundary; the rest run with it switched off."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from evaluators.array_lint import check_source
from evolve.evaluation import load_evaluator
from evolve.problem import load_problem
from evolve.types import Status, program_id_for

from ...conftest import PROBLEMS
from ..replies.host import attack

PROGRAMS = Path(__file__).resolve().parent / "programs"
SEED = 0
PASS_THE_LINT = ["asarray_capture.py", "patched_xp.py", "numpy_frame_walk.py", "lying_params.py", "nan_params.py"]


@pytest.fixture(scope="module")
def problem():
    return load_problem(PROBLEMS / "optimizer")


@pytest.fixture(scope="module")
def seed_metrics(problem) -> dict[str, float]:
    from evolve.evaluation import evaluate_locally, run_cascade

    code = problem.seed_code()
    outcomes = evaluate_locally(problem, code, program_id_for(code), SEED)
    outcomes += run_cascade(problem, problem.heldout_stages, code, program_id_for(code), SEED)  # role = "heldout"
    assert all(o.status is Status.OK for o in outcomes), outcomes
    return {k: v for o in outcomes for k, v in o.metrics.items()}


@pytest.fixture
def lint_off(problem, monkeypatch):
    monkeypatch.setattr(load_evaluator(problem), "source_check", lambda candidate: None)


@pytest.mark.parametrize("program", PASS_THE_LINT)
def test_these_cheats_pass_the_lint(program) -> None:
    assert check_source((PROGRAMS / program).read_text()) == []


@pytest.mark.parametrize("program", ["asarray_capture.py", "patched_xp.py", "numpy_frame_walk.py"])
def test_capture_and_walking_that_pass_the_lint_gain_nothing(problem, seed_metrics, program) -> None:
    outcome = attack(problem, PROGRAMS / program, "train", SEED)
    assert outcome.status is Status.OK, outcome  # the attack ran (a failed reach would be a runtime error)
    assert outcome.metrics["score"] <= seed_metrics["score"] + 1e-9


def test_gc_and_frame_reads_without_the_lint_gain_nothing(problem, seed_metrics, lint_off) -> None:
    outcome = attack(problem, PROGRAMS / "gc_referrers.py", "train", SEED)
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["score"] <= seed_metrics["score"] + 1e-9


def test_the_held_out_tasks_are_out_of_reach_too(problem, seed_metrics) -> None:
    outcome = attack(problem, PROGRAMS / "numpy_frame_walk.py", "heldout", SEED)
    assert outcome.status is Status.OK, outcome
    assert outcome.metrics["heldout_score"] <= seed_metrics["heldout_score"] + 1e-9


def test_lying_parameters_are_wrong_output(problem) -> None:
    outcome = attack(problem, PROGRAMS / "lying_params.py", "train", SEED)
    assert outcome.status is Status.WRONG_OUTPUT, outcome
    assert not outcome.metrics


def test_nan_and_infinite_parameters_score_the_worst_value(problem) -> None:
    outcome = attack(problem, PROGRAMS / "nan_params.py", "train", SEED)
    evaluator = load_evaluator(problem)
    assert outcome.status is Status.REJECTED, outcome  # below the stage's threshold: no held-out stage either
    assert outcome.metrics["score"] == evaluator.WORST
    assert outcome.metrics["diverged"] == sum(evaluator.REPEATS["train"] for _ in evaluator.TRAIN_SUITE)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"hostile_{name[:-3]}", PROGRAMS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_walkers_do_find_task_data_where_it_exists() -> None:
    """Not a vacuous pass: run in a process that holds a task instance (as the old in-sandbox training loop did),
    both walkers find its optimum. In the sandbox there is none to find."""
    optimum = np.arange(3.0)
    instance = SimpleNamespace(data={"a": np.eye(3), "optimum": optimum})
    params = [np.zeros(3)]

    def training_loop(instance, params):
        return _load("numpy_frame_walk.py")._steal(np), _load("gc_referrers.py")._look(params)

    walked, collected = training_loop(instance, params)
    assert walked is optimum and collected is optimum
