"""Short real runs of the shipped CPU problems on the session's local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolve.archive import read_programs
from evolve.evaluation import evaluate_locally
from evolve.loop import Evolution, StopReason
from evolve.mutators.scripted import ScriptedMutator
from evolve.mutators.tune import TuneMutator
from evolve.oversight.standing import Standing
from evolve.oversight.verdict import eval_verdict
from evolve.problem import load_problem
from evolve.query import RunArchive
from evolve.settings import RunSettings
from evolve.types import Status, program_id_for

from .conftest import PROBLEMS
from .test_oversight_runs import audited

pytestmark = pytest.mark.ray


def short_run(name: str, mutator: object, run_dir: Path, iterations: int, seed: int = 1):
    problem = load_problem(PROBLEMS / name)
    settings = RunSettings(iterations=iterations, concurrency=4, islands=1, seed=seed)
    summary = Evolution(problem, settings, mutator, run_dir, run_dir.name).run()  # type: ignore[arg-type]
    assert summary.stop_reason is StopReason.BUDGET
    assert audited(run_dir)  # `evolve archive audit RUN --json` on every shipped problem's run
    return summary, read_programs(run_dir).table.to_pylist()


def test_optimizer_tune_improves_and_checks_the_best_on_heldout_tasks(ray_session, tmp_path: Path) -> None:
    summary, rows = short_run("optimizer", TuneMutator(), tmp_path / "opt", iterations=16)
    assert summary.best is not None and summary.seed_score is not None
    assert summary.best.score > summary.seed_score, "a larger SGD step size is better on this suite"
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok
    for row in ok:  # the held-out stage never runs in the cascade, and its figures never reach a row
        assert not any(k.startswith("heldout_") for k in json.loads(row["metrics"]))
        assert [s["stage"] for s in json.loads(row["stages"])] == ["train"]
    with RunArchive(tmp_path / "opt") as archive:
        checked = archive.events(["heldout"], program_id=summary.best.program_id)
        standing = archive.events(["standing"], program_id=summary.best.program_id)[-1]
    assert checked and "heldout_score" in checked[0]["data"]["stages"][0]["metrics"]
    assert standing["data"]["standing"] == "promoted"  # the reported best is the best promoted program


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
    with RunArchive(tmp_path / "cp") as archive:
        standing = archive.events(["standing"], program_id=summary.best.program_id)[-1]["data"]
    assert standing["standing"] == "promoted" and standing["heldout"] == pytest.approx(summary.best.score, abs=1e-6)


def test_a_packing_living_off_the_tolerance_is_overfit() -> None:
    """The held-out re-check at 1e-12 refuses what the visible check at 1e-9 let through."""
    problem = load_problem(PROBLEMS / "circle_packing")
    code = (Path(__file__).resolve().parent / "heldout_cheats" / "circle_packing_tolerance.py").read_text()
    pid = program_id_for(code)
    visible = evaluate_locally(problem, code, pid, 0)
    assert visible[0].status is Status.OK
    verdict = eval_verdict(problem, code, pid, visible, 0)
    assert verdict.standing is Standing.OVERFIT and "leaves the unit square" in verdict.verdict.reasons[0]
