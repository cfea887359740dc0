"""``evolve init`` makes a problem that runs as generated; ``evolve problems`` lists problem folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.cli_extra import init, problems
from evolve.evaluation import evaluate_locally
from evolve.problem import load_problem
from evolve.scaffold import ScaffoldError, list_problems, scaffold
from evolve.types import Status, program_id_for

from .conftest import PROBLEMS, REPO
from .test_openevolve import CONFIG, EVALUATOR, INITIAL_PROGRAM


def test_scaffold_writes_a_valid_problem_whose_seed_passes(tmp_path: Path) -> None:
    written = scaffold(tmp_path / "demo")
    assert sorted(p.name for p in written) == ["README.md", "evaluator.py", "initial_program.py", "problem.toml"]
    problem = load_problem(tmp_path / "demo")
    assert problem.name == "demo" and problem.score.metric == "rmse" and problem.score.direction == "minimize"
    assert [f.name for f in problem.features] == ["code_length", "max_error"]
    code = problem.seed_code()
    assert "EVOLVE-BLOCK-START" in code and "EVOLVE-BLOCK-END" in code
    outcomes = evaluate_locally(problem, code, program_id_for(code), seed=7)
    assert [o.status for o in outcomes] == [Status.OK]
    assert 0 < outcomes[0].metrics["rmse"] < 1 and outcomes[0].metrics["max_error"] >= outcomes[0].metrics["rmse"]
    assert "evolve run" in (tmp_path / "demo" / "README.md").read_text()


def test_the_evaluator_rejects_wrong_answers(tmp_path: Path) -> None:
    scaffold(tmp_path / "demo")
    problem = load_problem(tmp_path / "demo")
    for body, status in (("return [0.0]", Status.WRONG_OUTPUT), ("return ['x'] * len(xs)", Status.WRONG_OUTPUT),
                         ("return [float('nan')] * len(xs)", Status.WRONG_OUTPUT),
                         ("raise ValueError('no')", Status.RUNTIME_ERROR)):
        code = problem.seed_code().replace("    result = []\n", f"    {body}\n    result = []\n")
        outcome = evaluate_locally(problem, code, program_id_for(code), seed=1)[0]
        assert outcome.status is status, body


def test_scaffold_refuses_bad_names_and_non_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="must start with a letter"):
        scaffold(tmp_path / "9lives")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty"):
        scaffold(tmp_path / "taken")
    scaffold(tmp_path / "taken", force=True)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_init_command(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(init, [str(tmp_path / "demo")])
    assert result.exit_code == 0 and "evolve run" in result.output
    again = runner.invoke(init, [str(tmp_path / "demo")])
    assert again.exit_code == 1 and "not empty" in again.output


def test_problems_lists_shipped_and_other_folders(tmp_path: Path) -> None:
    shipped = {p.name: p for p in list_problems(PROBLEMS)}
    assert "circle_packing" in shipped and shipped["circle_packing"].score == "sum_radii (maximize)"
    scaffold(tmp_path / "mine")
    oe = tmp_path / "oe_style"
    oe.mkdir()
    (oe / "initial_program.py").write_text(INITIAL_PROGRAM)
    (oe / "evaluator.py").write_text(EVALUATOR)
    (oe / "config.yaml").write_text(CONFIG)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "problem.toml").write_text('name = "broken"\n')
    (tmp_path / "not_a_problem").mkdir()
    result = CliRunner().invoke(problems, ["--root", str(tmp_path), "--json"])
    assert result.exit_code == 0
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert set(listed) == {"mine", "oe_style", "broken"}
    assert listed["mine"]["kind"] == "evolve" and listed["mine"]["error"] == ""
    assert listed["oe_style"]["kind"] == "openevolve" and listed["oe_style"]["stages"] == 2
    assert "seed" in listed["broken"]["error"]
    default = CliRunner().invoke(problems, [])
    assert default.exit_code == 0 and "circle_packing" in default.output


@pytest.mark.ray
def test_init_then_run_with_the_tune_mutator(tmp_path: Path) -> None:
    """``evolve init demo && evolve run demo --mutator tune --iterations 20``, as a user types it."""
    demo = tmp_path / "demo"
    assert CliRunner().invoke(init, [str(demo)]).exit_code == 0
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "evolve.cli", "run", "demo", "--mutator", "tune", "--iterations", "20",
         "--num-cpus", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopped: all 20 iterations done" in result.stdout
    runs = list((tmp_path / "archive" / "demo").iterdir())
    assert len(runs) == 1
    from evolve.query import RunArchive

    with RunArchive(runs[0]) as archive:
        assert archive.run_stats["done"] == 20 and archive.info["state"] == "finished"
        assert archive.count() == 21  # seed + 20 children, one row per iteration (duplicates included)
        best, seed = archive.best(), archive.seed()
        assert seed is not None and seed["status"] == "ok"
        assert best is not None and best["score"] <= seed["score"]
