"""The metrics a problem names are checked against what its evaluator returns (``evolve.problem_checks``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.evaluation import evaluate_locally
from evolve.problem import ProblemError, load_problem
from evolve.problem_checks import check_metrics, closest, describe_missing, missing_metrics
from evolve.types import program_id_for

from .conftest import PROBLEMS

TOML = """
name = "typo"
seed = "seed.py"
[score]
metric = "sum_radius"
[[features]]
name = "code_length"
min = 0
max = 100
bins = 2
[[features]]
name = "spread"
metric = "Radius_Spread"
min = 1
max = 3
bins = 2
[[stages]]
name = "quick"
function = "evaluate"
threshold = 1.0
threshold_metric = "min_radiu"
[[stages]]
name = "full"
function = "evaluate"
"""

EVALUATOR = """
def evaluate(candidate):
    value = candidate.call("value")
    return {"sum_radii": value, "min_radius": 0.5, "radius_spread": 1.5}
"""


@pytest.fixture
def typo_problem(tmp_path: Path):
    (tmp_path / "seed.py").write_text("# EVOLVE-BLOCK-START\nV = 2.0\n# EVOLVE-BLOCK-END\n\ndef value():\n    return V\n")
    (tmp_path / "evaluator.py").write_text(EVALUATOR)
    (tmp_path / "problem.toml").write_text(TOML)
    return load_problem(tmp_path)


def test_closest_names() -> None:
    names = ["sum_radii", "min_radius", "radius_spread", "run_seconds"]
    assert closest("sum_radius", names)[0] == "sum_radii"
    assert closest("Radius_Spread", names) == ("radius_spread",)
    assert closest("completely_else", names) == ()


def test_every_named_metric_is_checked_with_suggestions(typo_problem) -> None:
    returned = ["sum_radii", "min_radius", "radius_spread", "run_seconds"]
    missing = missing_metrics(typo_problem, returned)
    assert [(m.where, m.name, m.suggestions[:1]) for m in missing] == [
        ("score.metric", "sum_radius", ("sum_radii",)),
        ("features[1].metric", "Radius_Spread", ("radius_spread",)),  # code_length is built in: not missing
        ("stages[0].threshold_metric", "min_radiu", ("min_radius",)),
    ]
    text = describe_missing(missing, returned)
    assert "score.metric: the evaluator returns no metric 'sum_radius'; did you mean 'sum_radii'" in text
    assert text.endswith("(the evaluator returned: min_radius, radius_spread, run_seconds, sum_radii)")
    fixed = ["sum_radius", "Radius_Spread", "min_radiu"]
    assert missing_metrics(typo_problem, fixed) == []


def test_check_metrics_raises_a_problem_error_at_problem_toml(typo_problem) -> None:
    with pytest.raises(ProblemError) as info:
        check_metrics(typo_problem, ["sum_radii"])
    assert str(info.value.path).endswith("problem.toml")
    where = [w for w, _ in info.value.errors]
    assert where == ["score.metric", "features[1].metric", "stages[0].threshold_metric"]
    assert "did you mean 'sum_radii'?" in str(info.value) and "(it returns: sum_radii)" in str(info.value)
    check_metrics(typo_problem, ["sum_radius", "Radius_Spread", "min_radiu", "extra"])  # no error


def test_through_load_problem_and_a_real_evaluation(typo_problem) -> None:
    """What ``evolve eval`` gets from the cascade (here run without the threshold that would stop it) is checked."""
    from dataclasses import replace

    problem = replace(typo_problem, stages=tuple(replace(s, threshold=None) for s in typo_problem.stages))
    code = problem.seed_code()
    outcomes = evaluate_locally(problem, code, program_id_for(code), seed=0)
    assert [o.status.value for o in outcomes] == ["ok", "ok"]
    metrics = {k for o in outcomes for k in o.metrics}
    assert [m.name for m in missing_metrics(problem, metrics)] == ["sum_radius", "Radius_Spread"]


def test_the_shipped_problems_name_only_metrics_their_evaluators_return() -> None:
    problem = load_problem(PROBLEMS / "circle_packing")
    code = problem.seed_code()
    outcomes = evaluate_locally(problem, code, program_id_for(code), seed=0)
    assert all(o.passed for o in outcomes)
    check_metrics(problem, {k for o in outcomes for k in o.metrics})
