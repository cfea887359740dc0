"""Short real runs of the shipped CPU problems on the session's local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolve.archive import read_programs
from evolve.loop import Evolution, StopReason
from evolve.mutators.scripted import ScriptedMutator
from evolve.mutators.tune import TuneMutator
from evolve.problem import load_problem
from evolve.settings import RunSettings

from .conftest import PROBLEMS

pytestmark = pytest.mark.ray


def short_run(name: str, mutator: object, run_dir: Path, iterations: int, seed: int = 1):
    problem = load_problem(PROBLEMS / name)
    settings = RunSettings(iterations=iterations, concurrency=4, islands=1, seed=seed)
    summary = Evolution(problem, settings, mutator, run_dir, run_dir.name).run()  # type: ignore[arg-type]
    assert summary.stop_reason is StopReason.BUDGET
    return summary, read_programs(run_dir).table.to_pylist()


def test_optimizer_tune_improves_and_records_heldout(ray_session, tmp_path: Path) -> None:
    summary, rows = short_run("optimizer", TuneMutator(), tmp_path / "opt", iterations=16)
    assert summary.best is not None and summary.seed_score is not None
    assert summary.best.score > summary.seed_score, "a larger SGD step size is better on this suite"
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok
    for row in ok:
        metrics = json.loads(row["metrics"])
        assert any(k.startswith("heldout_") for k in metrics), metrics
        assert [s["stage"] for s in json.loads(row["stages"])] == ["train", "heldout"]


def test_tensor_rank_scripted_run_records_every_outcome(ray_session, tmp_path: Path) -> None:
    summary, rows = short_run("tensor_rank", ScriptedMutator(), tmp_path / "tr", iterations=4)
    assert summary.seed_score is not None and summary.seed_score >= 0
    children = [r for r in rows if r["iteration"] > 0]
    assert children
    for row in children:
        # Every child either scored or says why not.
        assert row["status"] == "ok" or row["edit_error"] or json.loads(row["artifacts"]) or json.loads(row["stages"])


def test_circle_packing_tune_beats_the_seed(ray_session, tmp_path: Path) -> None:
    summary, _ = short_run("circle_packing", TuneMutator(), tmp_path / "cp", iterations=40, seed=2)
    assert summary.best is not None and summary.seed_score is not None
    assert summary.best.score > summary.seed_score
