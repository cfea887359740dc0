"""The problem loader: valid folders load; every mistake in a bad file is reported with its key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.problem import FeatureDim, ProblemError, load_problem

from .conftest import PROBLEMS

GOOD = """
name = "demo"
description = "minimize f"
seed = "seed.py"
evaluator = "evaluator.py"
[score]
metric = "value"
direction = "minimize"
[[features]]
name = "code_length"
min = 0
max = 1000
bins = 4
[[stages]]
name = "quick"
timeout = 5
threshold = 10.0
[[stages]]
name = "full"
function = "evaluate_full"
timeout = 20
gpus = 1
"""


def write_problem(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "seed.py").write_text("x = 1\n")
    (tmp_path / "evaluator.py").write_text("def quick(c):\n    return {}\n")
    (tmp_path / "problem.toml").write_text(toml)
    return tmp_path


def test_shipped_problems_load() -> None:
    for folder in sorted(PROBLEMS.iterdir()):
        if (folder / "problem.toml").exists():
            problem = load_problem(folder)
            assert problem.seed_path.is_file(), folder
            assert problem.stages, folder


def test_good_problem_fields(tmp_path: Path) -> None:
    problem = load_problem(write_problem(tmp_path, GOOD))
    assert problem.name == "demo"
    assert problem.score.direction == "minimize" and problem.score.sign == -1.0
    assert [s.name for s in problem.stages] == ["quick", "full"]
    quick, full = problem.stages
    assert quick.function == "quick" and quick.threshold == 10.0 and quick.threshold_metric == "value"
    assert full.function == "evaluate_full" and full.gpus == 1.0
    assert problem.grid_shape == (4,)
    assert problem.language == "python"


def test_every_error_is_reported_with_key_and_reason(tmp_path: Path) -> None:
    bad = """
name = ""
seed = "missing.py"
colour = "blue"
[score]
metric = "value"
direction = "upwards"
[[features]]
name = "x"
min = 5
max = 1
bins = 0
[[stages]]
name = "a"
timeout = -1
cpus = "two"
[[stages]]
name = "a"
[limits]
memory_mb = 0
"""
    with pytest.raises(ProblemError) as info:
        load_problem(write_problem(tmp_path, bad))
    where = {loc for loc, _ in info.value.errors}
    for key in ("name", "seed", "colour", "score.direction", "features[0].bins", "stages[0].timeout",
                "stages[0].cpus", "stages[1].name", "limits.memory_mb"):
        assert key in where, (key, info.value.errors)
    text = str(info.value)
    assert "problem.toml" in text and "must be 'maximize' or 'minimize'" in text and "missing.py" in text


def test_feature_range_must_be_increasing(tmp_path: Path) -> None:
    toml = GOOD.replace("max = 1000", "max = 0")
    with pytest.raises(ProblemError, match=r"features\[0\]\.max"):
        load_problem(write_problem(tmp_path, toml))


def test_missing_folder_and_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ProblemError, match="not a directory"):
        load_problem(tmp_path / "nope")
    with pytest.raises(ProblemError, match="file not found"):
        load_problem(tmp_path)
    (tmp_path / "problem.toml").write_text("name = [unclosed")
    with pytest.raises(ProblemError, match="not valid TOML"):
        load_problem(tmp_path)


def test_bins_are_fixed_and_clamped() -> None:
    dim = FeatureDim(name="x", min=0.0, max=10.0, bins=5)
    assert [dim.bin_of(v) for v in (-3, 0, 1.99, 2.0, 9.99, 10, 1e9)] == [0, 0, 0, 1, 4, 4, 4]
    assert dim.bin_of(float("nan")) == 0 and dim.bin_of(float("inf")) == 4


def test_a_seed_that_does_not_parse_is_reported_at_its_own_file_and_line(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "x").mkdir()
    folder = write_problem(tmp_path / "x", GOOD)
    (folder / "seed.py").write_text("import math\n\n\ndef f(x):\n    return [x, x x]\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProblemError) as info:
        load_problem("x")
    text = str(info.value)
    first, code, caret = text.split("\n")[:3]
    assert first.startswith("x/seed.py:5: ") and "does not parse" in first
    assert code.strip() == "return [x, x x]"
    assert caret.strip().startswith("^") and code.index("x x") <= caret.index("^") <= code.index("x x") + 2
    assert "program.py" not in text and "harness" not in text


def test_a_seed_syntax_error_joins_the_other_mistakes(tmp_path: Path) -> None:
    folder = write_problem(tmp_path, GOOD.replace('direction = "minimize"', 'direction = "down"'))
    (folder / "seed.py").write_text("def f(:\n")
    with pytest.raises(ProblemError) as info:
        load_problem(folder)
    where = [loc for loc, _ in info.value.errors]
    assert "score.direction" in where and any(loc.endswith("seed.py:1") for loc in where)


def test_only_python_seeds_are_parsed(tmp_path: Path) -> None:
    folder = write_problem(tmp_path, GOOD.replace('seed = "seed.py"', 'seed = "kernel.cu"'))
    (folder / "kernel.cu").write_text("__global__ void k(float* x) { x[threadIdx.x] = 1.0f; }\n")
    assert load_problem(folder).language == "cuda"


def test_an_openevolve_folder_seed_is_parsed_too(tmp_path: Path) -> None:
    from evolve.openevolve import load_any_problem

    (tmp_path / "initial_program.py").write_text("# EVOLVE-BLOCK-START\nx = (1,\n# EVOLVE-BLOCK-END\n")
    (tmp_path / "evaluator.py").write_text("def evaluate(program_path):\n    return {'combined_score': 1.0}\n")
    with pytest.raises(ProblemError, match=r"initial_program\.py:2"):
        load_any_problem(tmp_path)


def test_heldout_stages_are_kept_apart_from_the_visible_cascade(tmp_path: Path) -> None:
    toml = GOOD.replace('direction = "minimize"', 'direction = "minimize"\nbound = 0.5') + """
[[stages]]
name = "fresh"
function = "heldout"
role = "heldout"
gpus = 2
[oversight]
top_k = 3
heldout_metric = "fresh_value"
tolerance = 0.2
reevaluations = 2
gap = 5.0
jump = 10
"""
    problem = load_problem(write_problem(tmp_path, toml))
    assert [s.name for s in problem.stages] == ["quick", "full"]
    assert [s.name for s in problem.heldout_stages] == ["fresh"] and problem.heldout_stages[0].heldout
    assert [s.name for s in problem.all_stages] == ["quick", "full", "fresh"]
    assert problem.stage("fresh").gpus == 2.0  # found by name, whatever its role
    o = problem.oversight
    assert (o.top_k, o.tolerance, o.reevaluations, o.gap, o.jump) == (3, 0.2, 2, 5.0, 10.0)
    assert problem.heldout_metric == "fresh_value" and problem.visible_metric == "value"
    assert o.allowance(10.0) == pytest.approx(0.5)  # the default relative tolerance (5%) beats 0.2 here
    assert problem.score.bound == 0.5 and problem.score.beyond_bound(0.4) and not problem.score.beyond_bound(0.6)


def test_oversight_defaults(tmp_path: Path) -> None:
    problem = load_problem(write_problem(tmp_path, GOOD))
    assert problem.heldout_stages == () and problem.all_stages == problem.stages
    o = problem.oversight
    assert (o.top_k, o.tolerance, o.relative_tolerance, o.reevaluations, o.gap, o.jump) == (1, 0.0, 0.05, 0, None,
                                                                                           None)
    assert problem.score.bound is None and problem.heldout_metric == problem.score.metric


def test_oversight_mistakes_are_all_reported(tmp_path: Path) -> None:
    toml = GOOD.replace('timeout = 5\n', 'timeout = 5\nrole = "secret"\n') + """
[oversight]
top_k = 0
tolerance = -1
reevaluations = 99
jump = 0.5
colour = "red"
"""
    with pytest.raises(ProblemError) as err:
        load_problem(write_problem(tmp_path, toml))
    where = {w for w, _ in err.value.errors}
    assert {"stages[0].role", "oversight.top_k", "oversight.tolerance", "oversight.reevaluations", "oversight.jump",
            "oversight.colour"} <= where


def test_heldout_settings_without_a_heldout_stage_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProblemError, match='no stage has role = "heldout"'):
        load_problem(write_problem(tmp_path, GOOD + '[oversight]\nheldout_metric = "x"\n'))


def test_a_problem_needs_a_visible_stage(tmp_path: Path) -> None:
    toml = GOOD.split("[[stages]]")[0] + '[[stages]]\nname = "only"\nrole = "heldout"\n'
    with pytest.raises(ProblemError, match="at least one visible stage"):
        load_problem(write_problem(tmp_path, toml))
