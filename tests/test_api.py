"""The notebook API: ``evolve.api.run`` drives a real run (with live progress), ``open_archive`` reads it back."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from evolve.api import RunResult, open_archive, run
from evolve.live import RichProgress
from evolve.mutators.scripted import ScriptedMutator
from evolve.query import RunNotFound

from .test_loop import write_tiny_problem

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_problem(tmp_path_factory.mktemp("api") / "tiny")


@pytest.fixture(scope="module")
def result(ray_session, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, str]:
    screen = io.StringIO()
    progress = RichProgress(Console(file=screen, force_terminal=True, width=120, color_system=None))
    out = run(tiny, iterations=16, mutator=ScriptedMutator(), archive_root=tmp_path_factory.mktemp("archive"),
              seed=4, concurrency=4, progress=progress)
    return out, screen.getvalue()


def test_run_returns_summary_and_archive(result) -> None:
    out, _ = result
    assert out.summary.done == 16 and out.run_dir.parent.name == "tiny"
    assert out.best_score is not None and out.best_code
    with out.archive() as archive:
        best = archive.best()
        assert best is not None and best["score"] == out.best_score
        assert archive.program(best["program_id"]).code == out.best_code
        assert archive.info["settings"]["iterations"] == 16 and archive.info["settings"]["seed"] == 4


def test_live_progress_followed_the_run(result) -> None:
    _, screen = result
    assert "evaluating the seed program" in screen
    assert "16/16 iterations (100%)" in screen and "evaluations/s" in screen


def test_open_archive_by_problem_folder_and_tables(result) -> None:
    out, _ = result
    with open_archive(out.run_dir.parent) as archive:  # archive/<problem>: its newest run
        assert archive.run_dir == out.run_dir
        history = archive.history()
        assert history.num_rows == archive.count() and history.column("iteration").to_pylist()[0] == 0
        assert archive.table(where="status = 'ok'").num_rows == archive.status_counts()["ok"]
    with pytest.raises(RunNotFound):
        open_archive(out.run_dir / "missing")


def test_resume_continues_the_same_run(result, tiny: Path) -> None:
    out, _ = result
    more = run(tiny, iterations=20, mutator=ScriptedMutator(), run_dir=out.run_dir, resume=True)
    assert more.run_dir == out.run_dir and more.summary.done == 20
    with more.archive() as archive:
        assert archive.info["sessions"] == 2 and archive.info["settings"]["iterations"] == 20
    with pytest.raises(FileExistsError):
        run(tiny, iterations=2, mutator=ScriptedMutator(), run_dir=out.run_dir)
