"""The Ray loop end to end with the scripted and tune mutators on a small inline problem."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.archive import read_migrations, read_programs
from evolve.loop import Evolution, SeedFailed, StopReason
from evolve.mutators.scripted import ScriptedMutator
from evolve.mutators.tune import TuneMutator
from evolve.problem import load_problem
from evolve.settings import RunSettings

from .conftest import REPO

pytestmark = pytest.mark.ray

SEED = """\
# EVOLVE-BLOCK-START
A = 1.0
B = -2.0
STEPS = 3
# EVOLVE-BLOCK-END


def solve():
    return [A, B, STEPS]
"""

EVALUATOR = """\
import math
from evolve import WrongOutput


def evaluate(candidate):
    value = candidate.call("solve")
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise WrongOutput(f"solve() must return three numbers, got {value!r}")
    a, b, steps = value
    loss = (a - 3.0) ** 2 + (b - 0.5) ** 2 + 0.01 * abs(steps - 7)
    if not math.isfinite(loss):
        raise WrongOutput("loss is not finite")
    return {"loss": loss, "a": a}
"""

PROBLEM_TOML = """\
name = "tiny"
description = "Minimize a quadratic in the constants A and B."
seed = "seed.py"
evaluator = "evaluator.py"
[score]
metric = "loss"
direction = "minimize"
[[features]]
name = "a"
min = -5
max = 5
bins = 5
[[stages]]
name = "main"
function = "evaluate"
timeout = 20
[evolution]
islands = 2
migration_interval = 5
"""


def write_tiny_problem(folder: Path) -> Path:
    """The tiny problem (seed, evaluator, problem.toml) in ``folder``; shared by the loop, API and resume tests."""
    folder.mkdir(parents=True)
    (folder / "seed.py").write_text(SEED)
    (folder / "evaluator.py").write_text(EVALUATOR)
    (folder / "problem.toml").write_text(PROBLEM_TOML)
    return folder


@pytest.fixture
def tiny_problem(tmp_path: Path) -> Path:
    return write_tiny_problem(tmp_path / "tiny")


def run_evolution(problem_dir: Path, run_dir: Path, mutator: object, **settings: object):
    problem = load_problem(problem_dir)
    merged = {"iterations": 24, "concurrency": 4, "islands": 2, "migration_interval": 5, "seed": 7, **settings}
    evolution = Evolution(problem, RunSettings(**merged), mutator, run_dir, run_dir.name)  # type: ignore[arg-type]
    return evolution.run()


def test_scripted_run_end_to_end(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    summary = run_evolution(tiny_problem, run_dir, ScriptedMutator())
    assert summary.stop_reason is StopReason.BUDGET and summary.done == 24
    table = read_programs(run_dir).table
    rows = table.to_pylist()
    ids = [r["program_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a program was recorded twice"
    seed_rows = [r for r in rows if r["iteration"] == 0]
    assert len(seed_rows) == 1 and seed_rows[0]["mutator"] == "seed" and seed_rows[0]["status"] == "ok"
    # Every child names a parent that is itself in the archive (nothing referenced was lost).
    known = set(ids)
    for row in rows:
        if row["iteration"]:
            assert row["parent_ids"][0] in known
            assert row["mutator"] == "scripted"
    assert {r["status"] for r in rows} <= {"ok", "invalid_edit", "wrong_output", "runtime_error", "compile_error",
                                           "duplicate"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["isolation"] for r in ok), "every evaluated result records its isolation level"
    assert all(r["cell"] is not None for r in ok)
    info = json.loads((run_dir / "run.json").read_text())
    stats = json.loads((run_dir / "stats.json").read_text())
    assert info["state"] == "finished" and stats["done"] == 24
    assert (run_dir / "problem.toml").exists()
    # Seed placed on the second island and ring migrations recorded for replay.
    assert read_migrations(run_dir).num_rows >= 1


def test_tune_improves_on_the_seed(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    summary = run_evolution(tiny_problem, tmp_path / "run", TuneMutator(), iterations=40)
    assert summary.best is not None and summary.seed_score is not None
    assert summary.best.score < summary.seed_score  # minimizing loss


def program_sequence(run_dir: Path) -> list[tuple[int, str, str]]:
    rows = read_programs(run_dir, columns=["iteration", "program_id", "parent_ids"]).table.to_pylist()
    rows.sort(key=lambda r: r["iteration"])
    return [(r["iteration"], r["program_id"], (r["parent_ids"] or [""])[0]) for r in rows]


def test_deterministic_identical_at_concurrency_1_and_4(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    one = tmp_path / "c1"
    four = tmp_path / "c4"
    run_evolution(tiny_problem, one, ScriptedMutator(), deterministic=True, concurrency=1, iterations=16)
    run_evolution(tiny_problem, four, ScriptedMutator(), deterministic=True, concurrency=4, iterations=16)
    seq1, seq4 = program_sequence(one), program_sequence(four)
    assert len(seq1) > 10
    assert seq1 == seq4
    # The archive files are written in integration order: same order too.
    order1 = read_programs(one, columns=["program_id"]).table.column("program_id").to_pylist()
    order4 = read_programs(four, columns=["program_id"]).table.column("program_id").to_pylist()
    assert order1 == order4


def test_failing_seed_stops_before_evolution(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    (tiny_problem / "seed.py").write_text(SEED.replace("return [A, B, STEPS]", "return 1 / 0"))
    with pytest.raises(SeedFailed) as info:
        run_evolution(tiny_problem, tmp_path / "run", ScriptedMutator())
    text = str(info.value)
    assert "'main'" in text and "runtime_error" in text and "ZeroDivisionError" in text
    rows = read_programs(tmp_path / "run").table.to_pylist()
    assert [r["iteration"] for r in rows] == [0]
    # Resuming cannot evolve from a failed seed either, and says why instead of evaluating it again.
    problem = load_problem(tiny_problem)
    again = Evolution(problem, RunSettings(iterations=4, concurrency=2, islands=2), ScriptedMutator(),
                      tmp_path / "run", "run", resume=True)
    with pytest.raises(SeedFailed, match="already failed"):
        again.run()
    assert len(read_programs(tmp_path / "run").table) == 1


def test_target_score_and_time_limit_stop(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    summary = run_evolution(tiny_problem, tmp_path / "target", TuneMutator(), iterations=200, target_score=100.0)
    assert summary.stop_reason is StopReason.TARGET
    summary = run_evolution(tiny_problem, tmp_path / "time", TuneMutator(), iterations=100000, time_limit=3.0)
    assert summary.stop_reason is StopReason.TIME_LIMIT and summary.done < 100000


def test_worker_death_is_resubmitted_not_blamed(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    marker_dir = tmp_path / "deaths"
    marker_dir.mkdir()
    # A trusted evaluator whose Ray worker dies the first time it sees each program (a node/worker loss).
    (tiny_problem / "evaluator.py").write_text(EVALUATOR + f"""
import os
from pathlib import Path
_real = evaluate
def evaluate(candidate):
    marker = Path({str(marker_dir)!r}) / candidate.program_id
    if not marker.exists():
        marker.write_text("died once")
        os._exit(1)
    return _real(candidate)
""")
    run_dir = tmp_path / "run"
    summary = run_evolution(tiny_problem, run_dir, ScriptedMutator(), iterations=6, concurrency=2)
    assert summary.stop_reason is StopReason.BUDGET
    rows = read_programs(run_dir).table.to_pylist()
    assert not [r for r in rows if r["status"] == "system_error"]
    evaluated = [r for r in rows if r["status"] != "invalid_edit"]
    assert evaluated and all(r["status"] == "ok" for r in evaluated)
    assert len(list(marker_dir.iterdir())) == len(evaluated)


def test_sigkill_then_resume_loses_nothing(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    """Kill `evolve run` with SIGKILL mid-run, resume: every recorded program survives exactly once."""
    import ray

    address = ray.get_runtime_context().gcs_address
    run_dir = tmp_path / "run"
    # Slow each evaluation down a little so the kill lands mid-run.
    (tiny_problem / "evaluator.py").write_text(EVALUATOR.replace(
        "    value = candidate.call(\"solve\")", "    import time\n    time.sleep(0.2)\n    value = candidate.call(\"solve\")"))
    cmd = [sys.executable, "-m", "evolve.cli", "run", str(tiny_problem), "--mutator", "tune", "--iterations", "40",
           "--concurrency", "3", "--run-dir", str(run_dir), "--address", address, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    before: list[str] = []
    while time.monotonic() < deadline:
        if (run_dir / "journal").exists():
            before = read_programs(run_dir, columns=["program_id"]).table.column("program_id").to_pylist()
            if len(before) >= 8:
                break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(before) >= 8, proc.stdout.read().decode() if proc.stdout else ""
    killed = read_programs(run_dir, columns=["program_id"]).table.column("program_id").to_pylist()
    assert set(before) <= set(killed)

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = read_programs(run_dir).table.to_pylist()
    ids = [r["program_id"] for r in final]
    assert len(ids) == len(set(ids))
    assert set(killed) <= set(ids)
    children = [r for r in final if r["iteration"] > 0]
    info = json.loads((run_dir / "run.json").read_text())
    stats = json.loads((run_dir / "stats.json").read_text())
    assert info["state"] == "finished" and info["sessions"] == 2
    # Every iteration leaves a row (identical children too, as status "duplicate"), so the budget is exact.
    assert len(children) == 40 and stats["done"] == 40
    assert sorted(r["iteration"] for r in children) == sorted(set(r["iteration"] for r in children))


def test_identical_children_are_recorded_not_evaluated(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    # A script that always proposes the same (worsening) edit: each time the seed is the parent again, the child
    # is identical to the first one; when the first child is the parent, the edit no longer applies.
    edit = "<<<<<<< SEARCH\nA = 1.0\n=======\nA = 0.0\n>>>>>>> REPLACE\n"
    run_dir = tmp_path / "run"
    summary = run_evolution(tiny_problem, run_dir, ScriptedMutator([edit]), iterations=8, concurrency=1, islands=1)
    rows = read_programs(run_dir).table.to_pylist()
    statuses = sorted(r["status"] for r in rows if r["iteration"] > 0)
    assert summary.done == 8 and len(statuses) == 8
    assert statuses.count("ok") == 1 and statuses.count("duplicate") >= 1
    assert set(statuses) <= {"ok", "duplicate", "invalid_edit"}
    duplicate = next(r for r in rows if r["status"] == "duplicate")
    assert "identical to program" in duplicate["edit_error"] and duplicate["code"] == ""
    # Resuming the finished run does no more work: the duplicates' iterations were counted.
    again = Evolution(load_problem(tiny_problem), RunSettings(iterations=8, concurrency=1, islands=1, seed=7),
                      ScriptedMutator([edit]), run_dir, "run", resume=True).run()
    assert again.done == 8 and len(read_programs(run_dir).table) == len(rows)


def test_resume_with_incompatible_settings_is_refused_untouched(ray_session, tiny_problem: Path,
                                                                tmp_path: Path) -> None:
    from evolve.loop import RunRefused

    run_dir = tmp_path / "run"
    run_evolution(tiny_problem, run_dir, ScriptedMutator(), iterations=4, islands=2)
    info_before = (run_dir / "run.json").read_text()
    stats_before = (run_dir / "stats.json").read_text()
    problem = load_problem(tiny_problem)
    with pytest.raises(RunRefused, match="islands or the problem's feature grid changed"):
        Evolution(problem, RunSettings(iterations=8, islands=1), ScriptedMutator(), run_dir, "run",
                  resume=True).run()
    assert (run_dir / "run.json").read_text() == info_before
    assert (run_dir / "stats.json").read_text() == stats_before


def test_seed_with_a_non_finite_score_stops_the_run(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    (tiny_problem / "seed.py").write_text(SEED.replace("A = 1.0", "A = float('nan')"))
    (tiny_problem / "evaluator.py").write_text(EVALUATOR.replace(
        '    if not math.isfinite(loss):\n        raise WrongOutput("loss is not finite")\n', ""))
    with pytest.raises(SeedFailed, match="wrong_output"):
        run_evolution(tiny_problem, tmp_path / "run", ScriptedMutator())


def test_a_seed_that_meets_the_target_stops_at_once(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    summary = run_evolution(tiny_problem, tmp_path / "run", TuneMutator(), iterations=50, target_score=1e6)
    assert summary.stop_reason is StopReason.TARGET and summary.done == 0


def test_concurrency_follows_the_cluster_as_nodes_join_and_leave(tiny_problem: Path, tmp_path: Path,
                                                                 monkeypatch) -> None:
    from evolve import loop
    from evolve.cluster import ClusterView

    views = iter([ClusterView(nodes=1, cpus=2, gpus=0, node_resources=({"CPU": 2.0},)),
                  ClusterView(nodes=3, cpus=10, gpus=1, node_resources=({"CPU": 2.0}, {"CPU": 8.0},
                                                                         {"CPU": 1.0, "GPU": 1.0})),
                  ClusterView(nodes=1, cpus=2, gpus=0, node_resources=({"CPU": 2.0},))])
    monkeypatch.setattr(loop, "cluster_view", lambda: next(views))
    clock = [1000.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    evolution = Evolution(load_problem(tiny_problem), RunSettings(concurrency=0), ScriptedMutator(),
                          tmp_path / "run", "run", executor=object())  # type: ignore[arg-type]
    assert evolution.concurrency == 4  # 2 per slot
    clock[0] += 1
    assert evolution.concurrency == 4  # re-read every few seconds, not per iteration
    clock[0] += 6
    assert evolution.concurrency == 22  # nodes joined: 2 + 8 + 1 slots
    clock[0] += 6
    assert evolution.concurrency == 4  # and left


class PooledScripted(ScriptedMutator):
    """The scripted mutator called from the driver's thread pool, as the LLM mutator is."""

    max_concurrency = 3


def test_deterministic_with_a_pooled_mutator(ray_session, tiny_problem: Path, tmp_path: Path) -> None:
    run_evolution(tiny_problem, tmp_path / "a", PooledScripted(), deterministic=True, concurrency=1, iterations=10)
    run_evolution(tiny_problem, tmp_path / "b", PooledScripted(), deterministic=True, concurrency=4, iterations=10)
    inline = tmp_path / "c"
    run_evolution(tiny_problem, inline, ScriptedMutator(), deterministic=True, concurrency=2, iterations=10)
    assert program_sequence(tmp_path / "a") == program_sequence(tmp_path / "b") == program_sequence(inline)
