"""Oversight in real runs of the test problem (tests/oversight_problem): a memoriser found overfit, never best and
never a parent; flaky scores; each tripwire; quarantine and release; people's decisions through kills and resumes;
and no held-out figure or artifact in any prompt. Runs use the real evaluator and sandbox; all but the first
evaluate in this process (``LocalExecutor``) to spare Ray's start-up."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from evolve.archive import read_events, read_programs
from evolve.cli_oversight import approve, audit_command, reject, release
from evolve.loop import Evolution, StopReason
from evolve.mutators.scripted import ScriptedMutator
from evolve.oversight import events as ev
from evolve.oversight.read import approved_where, decisions, standings, top_rows
from evolve.oversight.standing import Standing
from evolve.problem import load_problem
from evolve.query import RunArchive
from evolve.settings import RunSettings
from evolve.types import program_id_for
from tests import llm_server as server_lib
from tests.oversight_problem.evaluator import HELDOUT_MARKER
from tests.oversight_problem.local import LocalExecutor
from tests.oversight_problem.programs import MEMORISER, honest

from .conftest import REPO

PROBLEM = Path(__file__).resolve().parent / "oversight_problem"
llm_server = server_lib.llm_server


def problem_with(tmp_path: Path, **changes: str) -> Path:
    """A copy of the test problem; ``changes`` replace text of its problem.toml (old=new pairs via dict order)."""
    folder = tmp_path / "problem"
    shutil.copytree(PROBLEM, folder, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (folder / "problem.toml").read_text()
    for old, new in changes.items():
        assert old in toml, old
        toml = toml.replace(old, new)
    (folder / "problem.toml").write_text(toml)
    return folder


def in_order(*answers: str) -> list[str]:
    """A script for ``ScriptedMutator`` (which answers ``script[iteration % len]``) giving iteration i answer i."""
    return [answers[-1], *answers[:-1]]


def local_run(problem_dir: Path, run_dir: Path, script: list[str], iterations: int, *, resume: bool = False,
              more: int | None = None, **settings: Any):
    problem = load_problem(problem_dir)
    merged = {"iterations": iterations, "concurrency": 1, "islands": 1, "seed": 3, **settings}
    evolution = Evolution(problem, RunSettings(**merged), ScriptedMutator(script), run_dir, run_dir.name,
                          resume=resume, more=more, executor=LocalExecutor(problem))  # type: ignore[arg-type]
    return evolution.run()


def code_of(answer: str) -> str:
    from evolve.edits import apply_response

    result = apply_response((PROBLEM / "seed.py").read_text(), answer)
    assert result.child is not None
    return result.child


def pid_of(answer: str) -> str:
    return program_id_for(code_of(answer))


def audited(run_dir: Path) -> list[dict[str, Any]]:
    """``evolve archive audit RUN --json``: JSON, in time order."""
    result = CliRunner().invoke(audit_command, [str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    return entries


def standing_map(run_dir: Path) -> dict[str, str]:
    with RunArchive(run_dir) as archive:
        return {pid: s.standing.value for pid, s in standings(archive).items()}


# ---------------------------------------------------------------------------------------------------------------
# the acceptance run


@pytest.mark.ray
def test_a_memoriser_is_overfit_never_best_never_a_parent_and_audited(ray_session, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    problem = load_problem(PROBLEM)
    script = in_order(honest(2), MEMORISER, honest(3), honest(4))
    settings = RunSettings(iterations=6, concurrency=3, islands=1, seed=5)
    summary = Evolution(problem, settings, ScriptedMutator(script), run_dir, "run").run()  # type: ignore[arg-type]
    assert summary.stop_reason is StopReason.BUDGET
    rows = read_programs(run_dir).table.to_pylist()
    memoriser, best_honest = pid_of(MEMORISER), pid_of(honest(4))
    by_id = {r["program_id"]: r for r in rows}
    assert by_id[memoriser]["score"] == 12.0 and by_id[memoriser]["status"] == "ok"  # the benchmark's best score
    # Never a parent, never an inspiration.
    assert all(memoriser not in (r["parent_ids"] or []) for r in rows)
    found = standing_map(run_dir)
    assert found[memoriser] == "overfit"
    assert found[best_honest] == "promoted"  # lesser ones are checked only if they arrived while they led
    # "Best" is the best promoted program everywhere the run reports it.
    assert summary.best is not None and summary.best.program_id == best_honest
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["best_program"] == best_honest and stats["best_visible_program"] == memoriser
    assert stats["standings"]["overfit"] == 1
    with RunArchive(run_dir) as archive:
        top = top_rows(archive, 5)
        assert top.standing == "promoted" and top.rows[0]["program_id"] == best_honest
        assert memoriser not in {r["program_id"] for r in top.rows}
        everything = top_rows(archive, 5, "all")
        assert everything.rows[0]["program_id"] == memoriser and everything.rows[0]["standing"] == "overfit"
        heldout = [e for e in archive.events([ev.HELDOUT]) if e["program_id"] == memoriser]
        assert heldout and heldout[0]["data"]["agrees"] is False and heldout[0]["data"]["heldout"] < 1.0
    # The held-out figures live in events only: no program row carries them.
    assert not any("heldout" in (r["metrics"] or "") for r in rows)
    assert all([s["stage"] for s in json.loads(r["stages"])] == ["benchmark"] for r in rows if r["status"] == "ok")
    entries = audited(run_dir)
    kinds = {(e["kind"], e["program_id"]) for e in entries}
    assert ("overfit", memoriser) in kinds and ("heldout_disagreement", memoriser) in kinds
    assert ("promotion", best_honest) in kinds and any(k == "sandbox_level" for k, _ in kinds)
    assert any(k == "stop" for k, _ in kinds)
    disagreement = next(e for e in entries if e["kind"] == "heldout_disagreement")
    assert disagreement["numbers"]["visible"] == 12.0 and disagreement["numbers"]["behind"] > 10


# ---------------------------------------------------------------------------------------------------------------
# flaky, tripwires, quarantine and release


def test_seed_dependent_noise_is_flaky(tmp_path: Path) -> None:
    folder = problem_with(tmp_path, **{'function = "evaluate"': 'function = "evaluate_noisy"'})
    run_dir = tmp_path / "run"
    summary = local_run(folder, run_dir, [honest(2)], 1)
    seed_id = program_id_for((PROBLEM / "seed.py").read_text())
    assert standing_map(run_dir)[seed_id] == "flaky"
    assert summary.best is None  # nothing is promoted: there is no trusted best
    with RunArchive(run_dir) as archive:
        (reeval, *_) = [e for e in archive.events([ev.REEVALUATION]) if e["program_id"] == seed_id]
    assert reeval["data"]["reproduces"] is False and reeval["data"]["spread"] > 0.01
    assert any(e["kind"] == "flaky_reevaluation" and e["program_id"] == seed_id for e in audited(run_dir))


def test_jump_bound_release_and_a_person_releasing(tmp_path: Path) -> None:
    """A jump far beyond the recent improvements quarantines an honest program until its re-check clears it; a score
    beyond the bound stays quarantined until a person releases it, after which it is checked like any program."""
    folder = problem_with(tmp_path, **{'direction = "maximize"': 'direction = "maximize"\nbound = 11.0',
                                       "top_k = 1": "top_k = 1\njump = 3.0\njump_history = 2"})
    run_dir = tmp_path / "run"
    script = in_order(honest(2), honest(3), honest(5), MEMORISER)
    local_run(folder, run_dir, script, 4)
    memoriser, jumper = pid_of(MEMORISER), pid_of(honest(5))
    found = standing_map(run_dir)
    assert found[jumper] == "promoted" and found[memoriser] == "quarantined"
    with RunArchive(run_dir) as archive:
        wires = {(e["program_id"], e["data"]["tripwire"]) for e in archive.events([ev.TRIPWIRE])}
        releases = archive.events([ev.RELEASE])
        checks = {e["program_id"] for e in archive.events([ev.CHECK])}
    assert {(jumper, "jump"), (memoriser, "bound"), (memoriser, "jump")} <= wires
    assert [(e["program_id"], e["data"]["by"]) for e in releases] == [(jumper, "evolve")]
    assert memoriser not in checks  # beyond a physical bound: no automatic re-check clears that
    rows = read_programs(run_dir).table.to_pylist()
    assert all(memoriser not in (r["parent_ids"] or []) for r in rows)
    # A person releases it; the resumed run checks it (the bound does not fire again) and finds it overfit.
    refused = CliRunner().invoke(release, [str(run_dir), jumper, "--by", "ana"])
    assert refused.exit_code != 0 and "not quarantined" in refused.output
    done = CliRunner().invoke(release, [str(run_dir), memoriser[:8], "--by", "ana", "--note", "let us see"])
    assert done.exit_code == 0, done.output
    assert standing_map(run_dir)[memoriser] == "candidate"
    local_run(folder, run_dir, script, 4, resume=True, more=1)
    assert standing_map(run_dir)[memoriser] == "overfit"
    kinds = [(e["kind"], e["program_id"]) for e in audited(run_dir)]
    assert kinds.index(("release", memoriser)) < kinds.index(("overfit", memoriser))
    assert ("tripwire", jumper) in kinds and ("release", jumper) in kinds


def test_a_held_out_gap_beyond_the_declared_one_quarantines(tmp_path: Path) -> None:
    folder = problem_with(tmp_path, **{"top_k = 1": "top_k = 1\ngap = 5.0"})
    run_dir = tmp_path / "run"
    local_run(folder, run_dir, in_order(honest(2), MEMORISER), 2)
    memoriser = pid_of(MEMORISER)
    assert standing_map(run_dir)[memoriser] == "quarantined"
    with RunArchive(run_dir) as archive:
        (wire,) = archive.events([ev.TRIPWIRE])
    assert wire["program_id"] == memoriser and wire["data"]["tripwire"] == "gap" and wire["data"]["phase"] == "check"
    assert wire["data"]["visible"] == 12.0 and abs(wire["data"]["heldout"]) < 1.0
    assert any(e["kind"] == "quarantine" and e["program_id"] == memoriser for e in audited(run_dir))


def test_an_evaluator_declared_anomaly_quarantines_and_never_reaches_the_row(tmp_path: Path) -> None:
    folder = problem_with(tmp_path, **{'function = "evaluate"': 'function = "evaluate_watchful"'})
    run_dir = tmp_path / "run"
    local_run(folder, run_dir, in_order(honest(2), MEMORISER, honest(3)), 3)
    memoriser = pid_of(MEMORISER)
    with RunArchive(run_dir) as archive:
        wires = archive.events([ev.TRIPWIRE])
        row = archive.raw_row(memoriser)
    # Quarantined on arrival and re-checked at once: the re-evaluation flags it again, so the quarantine stays.
    assert [(w["program_id"], w["data"]["tripwire"], w["data"]["phase"]) for w in wires] == [
        (memoriser, "anomaly", "arrival"), (memoriser, "anomaly", "check")]
    assert "lookup table" in wires[0]["data"]["message"]
    assert "lookup table" not in json.dumps(row, default=str)  # kept out of the row, hence out of every prompt
    assert standing_map(run_dir)[memoriser] == "quarantined"
    assert standing_map(run_dir)[pid_of(honest(3))] == "promoted"


def test_standings_rebuilt_from_events_equal_the_live_ones(tmp_path: Path) -> None:
    from evolve.oversight.rebuild import restore_oversight

    folder = problem_with(tmp_path, **{'direction = "maximize"': 'direction = "maximize"\nbound = 11.0'})
    problem = load_problem(folder)
    run_dir = tmp_path / "run"
    settings = RunSettings(iterations=4, concurrency=1, islands=1, seed=2)
    script = in_order(honest(2), MEMORISER, honest(3), honest(5))
    evolution = Evolution(problem, settings, ScriptedMutator(script), run_dir, "run",
                          executor=LocalExecutor(problem))  # type: ignore[arg-type]
    evolution.run()
    live = evolution.oversight
    rebuilt = restore_oversight(read_events(run_dir), read_programs(run_dir).table, problem)

    def shape(state: Any) -> Any:
        return ({pid: (w.standing, w.checks, w.decided, w.released, sorted(w.tripwires), w.key)
                 for pid, w in state.watched.items()}, list(state._contenders), sorted(state.excluded()))

    assert shape(rebuilt.state) == shape(live) and live.standing(pid_of(MEMORISER)) is Standing.QUARANTINED
    assert set(rebuilt.subjects) == {pid for pid, w in live.watched.items() if w.standing is Standing.PROMOTED}
    assert sorted(evolution.db.excluded) == sorted(rebuilt.state.excluded())
    assert rebuilt.jump_fitness[-1] == evolution.jump_watch.best


# ---------------------------------------------------------------------------------------------------------------
# people's decisions


def test_decisions_survive_a_kill_and_a_resume_and_export_the_approved(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    local_run(PROBLEM, run_dir, in_order(honest(2), MEMORISER, honest(3)), 3)
    memoriser, best = pid_of(MEMORISER), pid_of(honest(3))
    runner = CliRunner()
    refused = runner.invoke(approve, [str(run_dir), memoriser, "--by", "ana"])
    assert refused.exit_code != 0 and "needs --force" in refused.output
    assert runner.invoke(approve, [str(run_dir), best, "--by", "ana", "--note", "checked by hand"]).exit_code == 0
    assert runner.invoke(reject, [str(run_dir), memoriser, "--by", "bo", "--note", "a lookup table"]).exit_code == 0
    forced = runner.invoke(approve, [str(run_dir), pid_of(honest(2)), "--by", "cy", "--json"])
    assert forced.exit_code == 0 and json.loads(forced.output)["forced"] is False  # promoted: nothing to force
    # A resumed run killed mid-way (SIGKILL at its 4th archive write), then resumed again.
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVOLVE_FAILPOINTS": "append:4"}
    resume = (f"from tests.test_oversight_runs import local_run, PROBLEM, honest\n"
              f"from pathlib import Path\n"
              f"local_run(PROBLEM, Path({str(run_dir)!r}), [honest(4), honest(5)], 3, resume=True, more=3)\n")
    killed = subprocess.run([sys.executable, "-c", resume], env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    local_run(PROBLEM, run_dir, [honest(4), honest(5)], 3, resume=True, more=1)
    with RunArchive(run_dir) as archive:
        made = decisions(archive)
        assert made[best].decision == "approved" and made[best].by == "ana" and made[best].note == "checked by hand"
        assert made[memoriser].decision == "rejected" and made[memoriser].by == "bo"
        assert made[best].code_sha256 == __import__("hashlib").sha256(code_of(honest(3)).encode()).hexdigest()
        assert standings(archive)[memoriser].standing is Standing.OVERFIT
        approved = archive.table(approved_where(archive), ["program_id"]).column("program_id").to_pylist()
    assert sorted(approved) == sorted([best, pid_of(honest(2))])
    # No check was decided twice across the kill: one standing event per (program, check).
    events = read_events(run_dir, [ev.STANDING]).to_pylist()
    keys = [(e["program_id"], json.loads(e["data"])["check"]) for e in events]
    assert len(keys) == len(set(keys))
    kinds = [e["kind"] for e in audited(run_dir)]
    assert kinds.count("approval") == 2 and kinds.count("rejection") == 1


def test_export_approved_writes_only_approved_programs(tmp_path: Path) -> None:
    from evolve.cli_archive_export import export

    run_dir = tmp_path / "run"
    local_run(PROBLEM, run_dir, [honest(2)], 1)
    assert CliRunner().invoke(approve, [str(run_dir), pid_of(honest(2)), "--by", "ana"]).exit_code == 0
    out = tmp_path / "approved.json"
    result = CliRunner().invoke(export, [str(run_dir), "-o", str(out), "--approved"])
    assert result.exit_code == 0, result.output
    assert [r["program_id"] for r in json.loads(out.read_text())] == [pid_of(honest(2))]


# ---------------------------------------------------------------------------------------------------------------
# no held-out figure or artifact reaches a prompt


def rewrite_responder(answers: list[str]) -> server_lib.Responder:
    """Answers in turn: full rewrites of the evolve block (honest improvements and the memoriser)."""
    count = {"n": 0}

    def respond(body: dict[str, Any]) -> server_lib.Reply:
        count["n"] += 1
        return server_lib.Reply(content="Here is a better program.\n\n" + answers[(count["n"] - 1) % len(answers)])

    return respond


def test_no_heldout_metric_or_artifact_reaches_any_prompt(llm_server, tmp_path: Path) -> None:
    from evolve.mutators.llm import build_from_options

    llm_server.responder = rewrite_responder([honest(2), MEMORISER, honest(3), honest(4), honest(5)])
    problem = load_problem(PROBLEM)
    options = {"models": ("fast",), "api_base": llm_server.url, "api_key": "test", "max_llm_calls": None,
               "max_tokens": None, "max_cost": None}
    mutator = build_from_options(problem, options, env={}, user_config_path=tmp_path / "none.toml")
    run_dir = tmp_path / "run"
    settings = RunSettings(iterations=8, concurrency=2, islands=1, seed=11)
    summary = Evolution(problem, settings, mutator, run_dir, "run", executor=LocalExecutor(problem)).run()
    assert summary.stop_reason is StopReason.BUDGET
    with RunArchive(run_dir) as archive:
        heldout = archive.events([ev.HELDOUT])
    assert len(heldout) >= 3  # the seed, the memoriser and honest improvements were checked
    secrets = {HELDOUT_MARKER}
    for event in heldout:
        value = event["data"]["heldout"]
        if value is not None:
            secrets |= {f"{value:.6g}", repr(value), f"{value:.4g}", f"{value:.3f}"}
        for stage in event["data"]["stages"]:
            for text in stage["artifacts"].values():
                secrets |= set(re.findall(r"\d+\.\d{6,}", text))  # the held-out inputs themselves
    prompts = [r["prompt"] for r in read_programs(run_dir).table.to_pylist() if r["prompt"]]
    sent = [json.dumps(body) for body in llm_server.requests]
    assert len(prompts) >= 8 and len(sent) >= 8
    assert all("score = " in p for p in prompts)  # the visible figures are there: the search below means something
    for text in prompts + sent:
        leaked = [s for s in secrets if s in text]
        assert not leaked, leaked
    assert audited(run_dir)


@pytest.mark.slow
@pytest.mark.ray
def test_deterministic_runs_decide_the_same_standings_at_any_concurrency(ray_session, tmp_path: Path) -> None:
    """Checks run next to the batch's evaluations, but the next batch waits for their verdicts, applied in iteration
    order: the archive and the standings do not depend on the concurrency."""
    problem = load_problem(PROBLEM)
    script = in_order(honest(2), MEMORISER, honest(3), honest(4), honest(5))
    outcomes = []
    for concurrency in (1, 4):
        run_dir = tmp_path / f"c{concurrency}"
        settings = RunSettings(iterations=10, concurrency=concurrency, islands=1, seed=4, deterministic=True,
                               batch_size=3)
        Evolution(problem, settings, ScriptedMutator(script), run_dir, "run").run()  # type: ignore[arg-type]
        rows = [(r["iteration"], r["program_id"], tuple(r["parent_ids"] or ()), r["status"])
                for r in read_programs(run_dir).table.to_pylist()]
        outcomes.append((sorted(rows), standing_map(run_dir)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1][pid_of(MEMORISER)] == "overfit"
