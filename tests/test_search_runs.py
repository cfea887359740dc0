"""Search choices in real runs (local Ray, real archive): novelty rejection, recorded choices, determinism."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.archive import read_programs
from evolve.loop import Evolution
from evolve.mutators.scripted import ScriptedMutator
from evolve.mutators.tune import TuneMutator
from evolve.problem import Problem, load_problem
from evolve.resume import RunRefused
from evolve.search.settings import resolve_search_settings
from evolve.settings import RunSettings

from .conftest import REPO
from .test_loop import program_sequence, write_tiny_problem

pytestmark = pytest.mark.ray

CONSTANTS = "\n".join(f"C{i} = {i}.5" for i in range(12))
LONG_SEED = f"""\
# EVOLVE-BLOCK-START
A = 1.0
{CONSTANTS}
# EVOLVE-BLOCK-END


def solve():
    return [A, C0 + C11, 3]
"""
# Worse than the seed (A moves away from 3), so the seed stays the only elite and every edit applies to it.
NEAR = "<<<<<<< SEARCH\nA = 1.0\n=======\nA = 0.99{iteration}\n>>>>>>> REPLACE\n"
FAR = ("```python\n# EVOLVE-BLOCK-START\nA = -4.{iteration}\nWEIGHTS = [k * k for k in range(7)]\nC0 = sum(WEIGHTS) / 91\n"
       "C11 = max(WEIGHTS) - min(WEIGHTS)\nfor _ in range(3):\n    C0, C11 = C11 * 0.5, C0 + 1\n"
       "# EVOLVE-BLOCK-END\n```\n")


def _with_search(problem: Problem, table: dict) -> Problem:
    return dataclasses.replace(problem, sections={**problem.sections, "search": table})


def _run(problem: Problem, run_dir: Path, mutator: object, **settings: object):
    merged = {"iterations": 12, "concurrency": 3, "islands": 1, "migration_interval": 50, "seed": 3, **settings}
    return Evolution(problem, RunSettings(**merged), mutator, run_dir, run_dir.name).run()  # type: ignore[arg-type]


@pytest.fixture
def long_problem(tmp_path: Path) -> Problem:
    folder = write_tiny_problem(tmp_path / "long")
    (folder / "seed.py").write_text(LONG_SEED)
    toml = (folder / "problem.toml").read_text().replace("bins = 5", "bins = 1")
    (folder / "problem.toml").write_text(toml)
    return load_problem(folder)


def test_near_copies_are_not_novel_and_never_evaluated(ray_session, long_problem: Problem, tmp_path: Path) -> None:
    problem = _with_search(long_problem, {"novelty": {"enabled": True, "threshold": 0.8}})
    run_dir = tmp_path / "run"
    summary = _run(problem, run_dir, ScriptedMutator([NEAR, FAR]), iterations=10)
    rows = [r for r in read_programs(run_dir).table.to_pylist() if r["iteration"] > 0]
    assert summary.done == 10 and len(rows) == 10
    near = [r for r in rows if r["iteration"] % 2 == 0]
    far = [r for r in rows if r["iteration"] % 2 == 1]
    assert {r["status"] for r in near} == {"not_novel"}
    for row in near:
        stages = json.loads(row["stages"]) if isinstance(row["stages"], str) else row["stages"]
        assert [s["stage"] for s in stages] == ["novelty"], "never sent to the evaluator"
        assert row["isolation"] == "" and row["eval_seconds"] == 0 and row["code"] == ""
        assert "too similar to program" in row["edit_error"] and "A = 0.99" in row["edit"]
        novelty = json.loads(row["llm"])["search"]["novelty"]
        assert novelty["similarity"] >= 0.8 and novelty["method"] == "minhash" and novelty["novel"] is False
    assert all(r["status"] == "ok" for r in far), "distinct children pass and are evaluated"
    for row in far:
        assert json.loads(row["llm"])["search"]["novelty"]["similarity"] < 0.8
    assert summary.statuses.get("not_novel") == 5


def test_a_higher_threshold_lets_the_same_children_through(ray_session, long_problem: Problem,
                                                          tmp_path: Path) -> None:
    problem = _with_search(long_problem, {"novelty": {"enabled": True, "threshold": 0.999}})
    run_dir = tmp_path / "run"
    _run(problem, run_dir, ScriptedMutator([NEAR, FAR]), iterations=4)
    rows = [r for r in read_programs(run_dir).table.to_pylist() if r["iteration"] > 0]
    assert {r["status"] for r in rows} == {"ok"}
    assert all(0.8 <= json.loads(r["llm"])["search"]["novelty"]["similarity"] < 0.999
               for r in rows if r["iteration"] % 2 == 0)


SEARCH_TABLE = {
    "parent_selection": "weighted",
    "mutation_mix": {"diff": 0.6, "crossover": 0.4},
    "adaptive": {"enabled": True, "exploitation": [0.5, 0.9]},
    "novelty": {"enabled": True, "threshold": 0.995},
}


def test_search_choices_are_recorded_with_every_child_and_deterministic(ray_session, tmp_path: Path) -> None:
    problem = _with_search(load_problem(write_tiny_problem(tmp_path / "tiny")), SEARCH_TABLE)
    one, three = tmp_path / "c1", tmp_path / "c3"
    _run(problem, one, TuneMutator(), deterministic=True, concurrency=1, iterations=16, islands=2)
    _run(problem, three, TuneMutator(), deterministic=True, concurrency=3, iterations=16, islands=2)
    assert program_sequence(one) == program_sequence(three)
    rows = sorted((r for r in read_programs(one).table.to_pylist() if r["iteration"] > 0),
                  key=lambda r: r["iteration"])
    searches = [json.loads(r["llm"])["search"] for r in rows]
    again = [json.loads(r["llm"])["search"] for r in sorted(
        (r for r in read_programs(three).table.to_pylist() if r["iteration"] > 0), key=lambda r: r["iteration"])]
    assert searches == again
    for row, search in zip(rows, searches, strict=True):
        assert search["policy"] == "weighted" and 0.5 <= search["exploitation"] <= 0.9
        assert search["kind"] in ("diff", "crossover") and search["parent"] == row["parent_ids"][0]
        assert search["island"] == row["island"] and search["iteration"] == row["iteration"]
    assert any(s["kind"] == "crossover" for s in searches)
    crossed = [r for r, s in zip(rows, searches, strict=True) if r["edit"].startswith("Crossover of literals")]
    assert crossed, "the offline crossover made children"
    for row in crossed:
        search = json.loads(row["llm"])["search"]
        assert search["kind"] == "crossover" and search["partner"] in row["edit"]
    stats = json.loads((one / "stats.json").read_text())["mutator"]
    assert stats["search"]["policy"] == "weighted" and len(stats["search"]["adaptive"]) == 2
    assert "literals" in stats, "the tune mutator's own statistics are still there"


def test_features_that_need_an_llm_are_refused_with_the_tune_mutator(tmp_path: Path) -> None:
    problem = _with_search(load_problem(write_tiny_problem(tmp_path / "tiny")),
                           {"strategies": {"enabled": True}, "mutation_mix": {"full": 1}})
    with pytest.raises(RunRefused) as info:
        Evolution(problem, RunSettings(), TuneMutator(), tmp_path / "run", "run", executor=object())  # type: ignore[arg-type]
    assert "cannot make 'full' children" in str(info.value) and "[search.strategies] need(s) the llm mutator" in \
        str(info.value)
    with pytest.raises(RunRefused, match=r"\[search\]\.parent_selection"):
        Evolution(_with_search(problem, {"parent_selection": "best"}), RunSettings(), TuneMutator(),
                  tmp_path / "run", "run", executor=object())  # type: ignore[arg-type]


def test_settings_resolved_and_checked_by_the_caller_are_used_as_given(tmp_path: Path, monkeypatch) -> None:
    """`evolve run` resolves the table with its flags and checks it against the mutator before Ray starts: the
    breeding takes that result instead of doing both again (the problem's own table is not read)."""
    import evolve.breeding as breeding

    given = resolve_search_settings({"parent_selection": "power", "mutation_mix": {"diff": 1, "crossover": 1}})

    def again(*_):
        raise AssertionError("resolved or checked a second time")

    monkeypatch.setattr(breeding, "resolve_search_settings", again)
    monkeypatch.setattr(breeding, "check_search", again)

    class GivenSettings(Evolution):
        def _init_steering(self) -> None:
            self.search_settings = given  # what `Evolution(..., search_settings=...)` sets before this runs
            super()._init_steering()

    problem = _with_search(load_problem(write_tiny_problem(tmp_path / "tiny")), {"parent_selection": "best"})
    evolution = GivenSettings(problem, RunSettings(), TuneMutator(), tmp_path / "run", "run", executor=object())  # type: ignore[arg-type]
    assert evolution.search is not None and evolution.search.settings is given


def test_without_a_search_table_nothing_is_wrapped_or_recorded(tmp_path: Path) -> None:
    mutator = TuneMutator()
    evolution = Evolution(load_problem(write_tiny_problem(tmp_path / "tiny")), RunSettings(), mutator,
                          tmp_path / "run", "run", executor=object())  # type: ignore[arg-type]
    assert evolution.mutator is mutator and evolution.search is None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update({"PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": "/nonexistent"})
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], env=env, capture_output=True, text=True,
                          timeout=240)


def test_search_flags_on_evolve_run_are_used_kept_and_refused_clearly(ray_session, tmp_path: Path) -> None:
    folder = write_tiny_problem(tmp_path / "tiny")
    address = ray_session.get_runtime_context().gcs_address
    run_dir = tmp_path / "run"
    result = _cli("run", str(folder), "--run-dir", str(run_dir), "--address", address, "--iterations", "6",
                  "--islands", "1", "--parent-selection", "power", "--mutation-mix", "diff=0.5,crossover=0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    stored = json.loads((run_dir / "run.json").read_text())["search"]
    assert stored["parent_selection"] == "power" and stored["mutation_mix"] == {"diff": 0.5, "crossover": 0.5}
    children = [r for r in read_programs(run_dir).table.to_pylist() if r["iteration"] > 0]
    assert children and all(json.loads(r["llm"])["search"]["policy"] == "power" for r in children)
    # A choice the mutator cannot honour, and a bad value: one clear message each, exit 1, no run folder.
    refused = _cli("run", str(folder), "--run-dir", str(tmp_path / "no1"), "--address", address,
                   "--strategies-every", "5")
    assert refused.returncode == 1 and "need(s) the llm mutator" in refused.stderr
    assert not (tmp_path / "no1" / "run.json").exists()
    bad = _cli("run", str(folder), "--run-dir", str(tmp_path / "no2"), "--address", address,
               "--mutation-mix", "diff=oops")
    assert bad.returncode == 1 and "--mutation-mix" in bad.stderr and "Traceback" not in bad.stderr
