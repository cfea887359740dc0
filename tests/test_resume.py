"""Resuming through the CLI: a run continues with the settings it stored (an LLM run included, with its endpoint,
models and budgets, never its key), flags given on resume override and are recorded, the budget is a total,
failed starts are never "the latest run", and a deterministic batch torn by a kill is completed exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from evolve.archive import read_migrations, read_programs
from evolve.cli import main
from evolve.cli_archive import archive
from tests import llm_server as server_lib

from .conftest import PROBLEMS, REPO
from .test_loop import PROBLEM_TOML, SEED, write_tiny_problem

llm_server = server_lib.llm_server
pytestmark = pytest.mark.ray


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_problem(tmp_path / "tiny")


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    base = {k: None for k in os.environ if k.startswith("OPENAI_")}  # type: ignore[misc]
    return CliRunner().invoke(main, list(args), env={**base, "XDG_CONFIG_HOME": "/nonexistent", **(env or {})})


def info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def sequence(run_dir: Path) -> list[tuple[int, str, str]]:
    rows = read_programs(run_dir, columns=["iteration", "program_id", "parent_ids"]).table.to_pylist()
    return sorted((r["iteration"], r["program_id"], (r["parent_ids"] or [""])[0]) for r in rows)


def migrations(run_dir: Path) -> list[tuple[str, int, int, int]]:
    return sorted((r["program_id"], r["from_island"], r["to_island"], r["iteration"])
                  for r in read_migrations(run_dir).to_pylist())


def test_resume_alone_continues_with_the_stored_settings(ray_session, tiny: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = cli("run", str(tiny), "--mutator", "scripted", "--iterations", "6", "--islands", "3",
                "--migration-interval", "2", "--seed", "5", "--concurrency", "2", "--run-dir", str(run_dir),
                "--quiet")
    assert first.exit_code == 0, first.output
    # The problem's own defaults differ (tune, 2 islands): a resume that forgot the run's settings would show it.
    again = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--iterations", "10")
    assert again.exit_code == 0, again.output
    assert "a total budget of 10 iterations" in again.output and "iterations 6 -> 10" in again.output
    assert "(10/10 iterations)" in again.output
    # In-process, the command used the caller's Ray connection and left it as it was (its fake GPU included).
    assert ray_session.is_initialized() and ray_session.cluster_resources().get("GPU") == 1
    stored = info(run_dir)
    assert stored["settings"]["islands"] == 3 and stored["settings"]["seed"] == 5 and stored["mutator"] == "scripted"
    assert stored["history"][-1]["overrides"] == {"iterations": {"stored": 6, "given": 10}}
    rows = read_programs(run_dir).table.to_pylist()
    assert {r["mutator"] for r in rows if r["iteration"]} == {"scripted"}
    assert {r["island"] for r in rows} <= {0, 1, 2} and len([r for r in rows if r["iteration"]]) == 10
    # --iterations on resume is the total: below what is done it is refused, saying how to ask for more.
    before = (run_dir / "run.json").read_text()
    low = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--quiet", "--iterations", "4")
    assert low.exit_code == 1 and "total budget" in low.output and "--more" in low.output
    assert (run_dir / "run.json").read_text() == before
    more = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--quiet", "--more", "3")
    assert more.exit_code == 0 and "(13/13 iterations)" in more.output, more.output
    # The stored [sandbox] table and requirement apply on resume too (here, as if the run had been started on a
    # host that allowed only session+rlimits and asked for landlock: the resume is refused before anything starts).
    stored = info(run_dir)
    stored["sandbox"] = {"table": {"layers": "session+rlimits"}, "require": "landlock"}
    (run_dir / "run.json").write_text(json.dumps(stored))
    strict = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--quiet", "--more", "1")
    assert strict.exit_code == 1 and "sandbox.require = 'landlock' cannot be met" in strict.output


def test_llm_run_resumes_with_its_endpoint_models_and_budgets_never_its_key(ray_session, llm_server, tiny: Path,
                                                                           tmp_path: Path) -> None:
    llm_server.responder = server_lib.tweak_constant_responder()
    llm_server.api_key = "sk-secret-for-this-test-only"
    (tiny / "problem.toml").write_text(PROBLEM_TOML + """
[[llm.models]]
name = "fast"
weight = 3.0
price_in = 0.5
price_out = 1.5
[[llm.models]]
name = "strong"
weight = 1.0
price_in = 2.0
price_out = 6.0
""")
    run_dir = tmp_path / "run"
    key = {"OPENAI_API_KEY": llm_server.api_key}
    first = cli("run", str(tiny), "--mutator", "llm", "--api-base", llm_server.url, "--max-llm-calls", "3",
                "--max-cost", "5", "--iterations", "20", "--concurrency", "2", "--run-dir", str(run_dir), "--quiet",
                env=key)
    assert first.exit_code == 3, first.output  # the calls budget stopped it
    stored = info(run_dir)["llm"]
    assert stored["api_base"] == llm_server.url and stored["max_calls"] == 3 and stored["max_cost"] == 5.0
    assert [(m["name"], m["weight"]) for m in stored["models"]] == [("fast", 3.0), ("strong", 1.0)]
    # The problem's [llm] table is gone and the environment names another endpoint: the run keeps its own.
    (tiny / "problem.toml").write_text(PROBLEM_TOML)
    elsewhere = {**key, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    calls = sum(llm_server.answered.values())
    again = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--quiet", env=elsewhere)
    assert again.exit_code == 3, again.output  # the stored budget holds: no call made, none lost
    assert sum(llm_server.answered.values()) == calls
    raised = cli("run", str(tiny), "--resume", "--run-dir", str(run_dir), "--quiet", "--max-llm-calls", "5",
                 "--model", "fast", env=elsewhere)
    assert raised.exit_code == 3, raised.output
    assert sum(llm_server.answered.values()) == calls + 2  # exactly the difference, at the stored endpoint
    history = info(run_dir)["history"]
    assert history[-1]["overrides"]["llm.max_calls"] == {"stored": 3, "given": 5}
    assert [m["name"] for m in history[-1]["overrides"]["llm.models"]["given"]] == ["fast"]
    assert info(run_dir)["llm"]["max_cost"] == 5.0 and info(run_dir)["llm"]["api_base"] == llm_server.url
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert llm_server.api_key.encode() not in path.read_bytes(), path


def test_failed_starts_are_never_the_latest_run(ray_session, tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    good = cli("run", str(tiny), "--mutator", "scripted", "--iterations", "3", "--archive-root", str(root), "--quiet")
    assert good.exit_code == 0, good.output
    (good_dir,) = [p for p in (root / "tiny").iterdir()]
    (tiny / "seed.py").write_text(SEED.replace("return [A, B, STEPS]", "return 1 / 0"))
    failed = cli("run", str(tiny), "--mutator", "scripted", "--iterations", "3", "--archive-root", str(root),
                 "--quiet")
    assert failed.exit_code == 1 and "failed_start" in failed.output, failed.output
    (failed_dir,) = [p for p in (root / "tiny").iterdir() if p != good_dir]
    assert info(failed_dir)["state"] == "failed_start" and "seed program failed" in info(failed_dir)["failure"]
    top = CliRunner().invoke(archive, ["top", str(root / "tiny"), "--json"])
    assert top.exit_code == 0 and json.loads(top.stdout), top.output  # the good run, not an empty header
    assert {r["program_id"] for r in json.loads(top.stdout)} <= {r["program_id"] for r in
                                                                 read_programs(good_dir).table.to_pylist()}
    (tiny / "seed.py").write_text(SEED)
    resumed = cli("run", str(tiny), "--resume", "--archive-root", str(root), "--quiet", "--more", "1")
    assert resumed.exit_code == 0 and f"archive {good_dir}" in resumed.output, resumed.output  # the summary line


def test_a_start_that_fails_before_its_run_leaves_no_folder(tiny: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = cli("run", str(tiny), "--mutator", "llm", "--api-base", "http://127.0.0.1:9/v1", "--model", "x",
                 "--run-dir", str(run_dir))
    assert result.exit_code == 1 and "cannot start the llm mutator" in result.output
    assert not run_dir.exists()


def test_a_torn_deterministic_batch_is_completed_exactly(ray_session, tiny: Path, tmp_path: Path) -> None:
    common = ["--mutator", "tune", "--iterations", "16", "--deterministic", "--batch-size", "4", "--quiet"]
    straight = tmp_path / "straight"
    assert cli("run", str(tiny), *common, "--concurrency", "1", "--run-dir", str(straight)).exit_code == 0
    torn = tmp_path / "torn"
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVOLVE_FAILPOINTS": "append:9"}  # mid-batch: rows 5.. of 5-8
    killed = subprocess.run([sys.executable, "-m", "evolve.cli", "run", str(tiny), *common, "--concurrency", "3",
                             "--run-dir", str(torn), "--address", address], env=env, capture_output=True, text=True,
                            timeout=240)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    children = [i for i, _, _ in sequence(torn) if i]
    assert children and len(children) % 4 != 0, children  # the kill tore a batch
    resumed = cli("run", str(tiny), "--resume", "--run-dir", str(torn), "--concurrency", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "completing the batch from iteration" in resumed.output
    assert sequence(torn) == sequence(straight)
    assert migrations(torn) == migrations(straight)


def test_an_unreadable_run_json_is_refused_with_the_reason(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text("{not json")
    result = cli("run", str(PROBLEMS / "circle_packing"), "--resume", "--run-dir", str(run_dir))
    assert result.exit_code == 1 and "cannot be read" in result.output
