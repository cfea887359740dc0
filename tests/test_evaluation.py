"""Loading trusted evaluators (`evolve/evaluation.py`) in a process that outlives runs (a Ray worker of the warm
runner): an edited evaluator or helper is loaded afresh, and two problems' same-named helpers never mix."""

from __future__ import annotations

import os
from pathlib import Path

from evolve.evaluation import load_evaluator
from evolve.problem import load_problem

TOML = """
name = "{name}"
seed = "seed.py"
evaluator = "evaluator.py"

[score]
metric = "value"

[[stages]]
name = "only"
function = "evaluate"
"""


def write(folder: Path, name: str, helper_value: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "problem.toml").write_text(TOML.format(name=name))
    (folder / "seed.py").write_text("x = 1\n")
    (folder / "evaluator.py").write_text("import evolve_test_helper\n\n"
                                         "def evaluate(candidate):\n"
                                         "    return {'value': evolve_test_helper.VALUE}\n")
    (folder / "evolve_test_helper.py").write_text(f"VALUE = {helper_value}\n")
    return folder


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_an_edited_helper_comes_with_the_reloaded_evaluator(tmp_path: Path) -> None:
    folder = write(tmp_path / "a", "helpers_a", 1)
    first = load_evaluator(load_problem(folder))
    assert first.evaluate(None) == {"value": 1}
    (folder / "evolve_test_helper.py").write_text("VALUE = 2\n")
    bump_mtime(folder / "evaluator.py")
    assert load_evaluator(load_problem(folder)).evaluate(None) == {"value": 2}
    assert first.evaluate(None) == {"value": 1}  # a loaded evaluator keeps the helper it imported


def test_two_problems_with_a_same_named_helper_each_get_their_own(tmp_path: Path) -> None:
    one = load_evaluator(load_problem(write(tmp_path / "one", "helpers_one", 10)))
    two = load_evaluator(load_problem(write(tmp_path / "two", "helpers_two", 20)))
    assert (one.evaluate(None), two.evaluate(None)) == ({"value": 10}, {"value": 20})
