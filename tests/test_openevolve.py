"""OpenEvolve-format problem folders: the mapping to a Problem, the notes, in-process evaluation in the sandbox,
and a function-minimization problem written here evolving with the scripted mutator."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from evolve.evaluation import run_stage
from evolve.openevolve import (
    is_openevolve_folder,
    load_any_problem,
    load_openevolve_problem,
    openevolve_problem_toml,
)
from evolve.openevolve_evaluator import split_result, with_combined_score
from evolve.problem import ProblemError, parse_problem
from evolve.types import Status, program_id_for

INITIAL_PROGRAM = '''\
"""Find the minimum of a bumpy 2-D function."""
import math
import random


# EVOLVE-BLOCK-START
STEP = 0.5
ITERATIONS = 60


def search_algorithm(bounds=(-5.0, 5.0)):
    rng = random.Random(0)
    x, y = rng.uniform(*bounds), rng.uniform(*bounds)
    best = evaluate_function(x, y)
    for _ in range(ITERATIONS):
        cx, cy = x + rng.gauss(0, STEP), y + rng.gauss(0, STEP)
        value = evaluate_function(cx, cy)
        if value < best:
            x, y, best = cx, cy, value
    return x, y, best
# EVOLVE-BLOCK-END


def evaluate_function(x, y):
    return (x - 1.5) ** 2 + (y + 0.5) ** 2 + 0.3 * math.sin(3 * x) * math.cos(3 * y)


def run_search():
    return search_algorithm()
'''

EVALUATOR = '''\
import importlib.util
import math

TARGET = -0.2957  # about the global minimum's value


class EvaluationResult:
    """What newer OpenEvolve evaluators return: metrics plus artifacts."""

    def __init__(self, metrics, artifacts):
        self.metrics = metrics
        self.artifacts = artifacts


def _load(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate_stage1(program_path):
    x, y, value = _load(program_path).run_search()
    finite = all(math.isfinite(v) for v in (x, y, value))
    return {"runs": 1.0 if finite else 0.0, "combined_score": 0.5 if finite else 0.0}


def evaluate_stage2(program_path):
    x, y, value = _load(program_path).run_search()
    value_score = 1.0 / (1.0 + abs(value - TARGET))
    distance_score = 1.0 / (1.0 + math.hypot(x - 1.5, y + 0.5))
    return EvaluationResult({"value_score": value_score, "distance_score": distance_score, "reliable": True},
                            {"found": f"x={x:.4f} y={y:.4f} value={value:.5f}"})


def evaluate(program_path):
    return evaluate_stage2(program_path)
'''

CONFIG = '''\
max_iterations: 12
checkpoint_interval: 5
random_seed: 42
diff_based_evolution: true
llm:
  primary_model: "gpt-4o-mini"
  primary_model_weight: 0.8
  secondary_model: "gpt-4o"
  secondary_model_weight: 0.2
  api_base: "http://localhost:9/v1"
  api_key: "sk-should-never-be-used"
  temperature: 0.6
  max_tokens: 2048
  top_p: 0.9
prompt:
  system_message: "You improve search algorithms. Find the global minimum of the function."
  num_top_programs: 2
database:
  population_size: 50
  num_islands: 2
  migration_interval: 5
  exploitation_ratio: 0.6
  feature_dimensions: ["complexity", "diversity", "distance_score", "value_score"]
  feature_bins: {"complexity": 4, "distance_score": 5, "value_score": 3}
evaluator:
  timeout: 30
  memory_limit_mb: 1024
  cascade_thresholds: [0.4, 0.9]
  parallel_evaluations: 2
evolve_feature_ranges:
  value_score: [0.2, 1.0]
'''


@pytest.fixture
def oe_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "function_minimization"
    folder.mkdir()
    (folder / "initial_program.py").write_text(INITIAL_PROGRAM)
    (folder / "evaluator.py").write_text(EVALUATOR)
    (folder / "config.yaml").write_text(CONFIG)
    return folder


def test_detects_openevolve_folders(oe_folder: Path, problem_copy) -> None:
    assert is_openevolve_folder(oe_folder)
    assert not is_openevolve_folder(problem_copy("circle_packing"))  # has problem.toml
    assert not is_openevolve_folder(oe_folder / "evaluator.py")


def test_maps_config_to_a_problem_and_says_what_it_ignores(oe_folder: Path) -> None:
    problem, notes = load_openevolve_problem(oe_folder)
    assert problem.name == "function_minimization" and problem.seed_file == "initial_program.py"
    assert problem.description.startswith("You improve search algorithms")
    assert (problem.score.metric, problem.score.direction) == ("combined_score", "maximize")
    assert (problem.evolution.iterations, problem.evolution.islands, problem.evolution.migration_interval) == \
        (12, 2, 5)
    assert problem.evolution.exploitation == 0.6 and problem.evolution.inspirations == 2
    assert problem.evolution.mutator == "llm" and problem.limits.memory_mb == 1024
    # Cascade: stage1 gated by the first threshold, stage2 last (no threshold after the last stage).
    assert [(s.name, s.function, s.timeout, s.threshold) for s in problem.stages] == [
        ("stage1", "evaluate_stage1", 30.0, 0.4), ("stage2", "evaluate_stage2", 30.0, None)]
    assert problem.stages[0].threshold_metric == "combined_score"
    features = {f.name: (f.source, f.min, f.max, f.bins) for f in problem.features}
    assert features == {"complexity": ("code_length", 0.0, 10000.0, 4),
                        "distance_score": ("distance_score", 0.0, 1.0, 5),
                        "value_score": ("value_score", 0.2, 1.0, 3)}
    llm = problem.sections["llm"]
    assert llm["api_base"] == "http://localhost:9/v1" and "api_key" not in llm
    assert llm["models"] == [
        {"name": "gpt-4o-mini", "weight": 0.8, "temperature": 0.6, "max_tokens": 2048, "extra_body": {"top_p": 0.9}},
        {"name": "gpt-4o", "weight": 0.2, "temperature": 0.6, "max_tokens": 2048, "extra_body": {"top_p": 0.9}},
    ]
    assert problem.sections["sandbox"] == {"allow_in_process": True}
    text = "\n".join(notes)
    assert "diversity' dropped" in text and "api_key ignored" in text
    assert "ignored (no evolve equivalent): checkpoint_interval, random_seed, database.population_size, " \
           "evaluator.parallel_evaluations" in text
    assert "in_process" in text


def test_llm_settings_are_valid_for_the_llm_mutator(oe_folder: Path) -> None:
    from evolve.llm.settings import resolve_llm_settings

    problem, _ = load_openevolve_problem(oe_folder)
    settings = resolve_llm_settings(problem.sections["llm"], None, {}, {})
    assert settings.model_names == ("gpt-4o-mini", "gpt-4o") and settings.api_key == ""


def test_single_evaluate_and_defaults_without_config(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "initial_program.py").write_text("X = 1\n")
    (folder / "evaluator.py").write_text("def evaluate(path):\n    return {'score': 1.0}\n")
    problem, notes = load_openevolve_problem(folder)
    assert [(s.name, s.function, s.timeout) for s in problem.stages] == [("evaluate", "evaluate", 300.0)]
    assert [f.name for f in problem.features] == ["complexity"]  # OpenEvolve's default dims, minus diversity
    assert problem.evolution.mutator == "tune"
    assert any("no config.yaml" in n for n in notes)
    assert load_any_problem(folder)[0] == problem


def test_clear_errors(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "initial_program.py").write_text("X = 1\n")
    (folder / "evaluator.py").write_text("def score(path):\n    return {}\n")
    with pytest.raises(ProblemError, match="defines no evaluate"):
        load_openevolve_problem(folder)
    (folder / "evaluator.py").write_text("def evaluate(path):\n    return {}\n")
    (folder / "config.yaml").write_text("database: [1, 2\n")
    with pytest.raises(ProblemError, match="not valid YAML"):
        load_openevolve_problem(folder)
    (folder / "config.yaml").write_text("max_iterations: many\ndatabase:\n  feature_bins: 0\n")
    with pytest.raises(ProblemError) as caught:
        load_openevolve_problem(folder)
    assert {where for where, _ in caught.value.errors} == {"max_iterations", "database.feature_bins.complexity"}


def test_generated_problem_toml_round_trips(oe_folder: Path) -> None:
    text = openevolve_problem_toml(oe_folder)
    assert text.startswith("# Generated by evolve")
    again = parse_problem(oe_folder.resolve(), tomllib.loads(text))
    assert again == load_openevolve_problem(oe_folder)[0]


def test_result_cleaning_follows_openevolve() -> None:
    metrics, artifacts = split_result({"a": 1, "ok": True, "error": "boom", "details": {"k": [1, 2]}})
    assert metrics == {"a": 1.0, "ok": 1.0} and artifacts == {"error": "boom", "details": '{"k": [1, 2]}'}
    assert with_combined_score({"a": 0.2, "b": 0.6, "error": 0.0})["combined_score"] == pytest.approx(0.4)
    assert with_combined_score({"combined_score": 0.9, "a": 0.1})["combined_score"] == 0.9


def test_stages_run_the_whole_evaluator_in_the_sandbox(oe_folder: Path) -> None:
    problem, _ = load_openevolve_problem(oe_folder)
    code = problem.seed_code()
    pid = program_id_for(code)
    first = run_stage(problem, "stage1", code, pid, seed=1)
    assert first.status is Status.OK and first.in_process and first.isolation
    assert first.metrics == {"runs": 1.0, "combined_score": 0.5}
    second = run_stage(problem, "stage2", code, pid, seed=1)
    assert second.status is Status.OK and second.in_process
    assert second.metrics["combined_score"] == pytest.approx(
        (second.metrics["value_score"] + second.metrics["distance_score"] + 1.0) / 3)
    assert second.artifacts["found"].startswith("x=")
    # A candidate that crashes inside the evaluator's process: a runtime error of the candidate.
    crashing = code.replace("def run_search():\n    return search_algorithm()", "def run_search():\n    return 1 / 0")
    crashed = run_stage(problem, "stage1", crashing, program_id_for(crashing), seed=1)
    assert crashed.status is Status.RUNTIME_ERROR and "ZeroDivisionError" in crashed.message + str(crashed.artifacts)
    # Below the stage-1 threshold: rejected by the cascade.
    nan = code.replace("return x, y, best", "return x, y, float('nan')")
    rejected = run_stage(problem, "stage1", nan, program_id_for(nan), seed=1)
    assert rejected.status is Status.REJECTED and "misses threshold 0.4" in rejected.message


def test_in_process_mode_is_refused_unless_the_problem_allows_it(oe_folder: Path) -> None:
    import dataclasses

    problem, _ = load_openevolve_problem(oe_folder)
    strict = dataclasses.replace(problem, sections={k: v for k, v in problem.sections.items() if k != "sandbox"})
    outcome = run_stage(strict, "stage1", problem.seed_code(), "x", seed=1)
    assert outcome.status is Status.EVALUATOR_ERROR and "allow_in_process" in outcome.message


@pytest.mark.ray
def test_function_minimization_evolves_with_the_scripted_mutator(ray_session, oe_folder: Path,
                                                                 tmp_path: Path) -> None:
    from evolve.archive import read_programs
    from evolve.loop import Evolution, StopReason
    from evolve.mutators.scripted import ScriptedMutator
    from evolve.settings import RunSettings

    problem, _ = load_openevolve_problem(oe_folder)
    run_dir = tmp_path / "run"
    settings = RunSettings.for_problem(problem, mutator="scripted", concurrency=4, seed=5)
    summary = Evolution(problem, settings, ScriptedMutator(), run_dir, "run").run()
    assert summary.stop_reason is StopReason.BUDGET and summary.done == 12
    rows = read_programs(run_dir).table.to_pylist()
    evaluated = [r for r in rows if r["status"] != "invalid_edit"]
    assert evaluated and all(r["in_process"] for r in evaluated)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 2 and all(r["score"] is not None and 0 < r["score"] <= 1 for r in ok)
    assert textwrap.dedent(ok[0]["code"]).startswith('"""Find the minimum')
