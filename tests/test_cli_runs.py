"""`evolve run` as a user runs it: the README's command, an LLM budget stop, Ctrl-C; each then resumable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.archive import read_programs
from tests import llm_server as server_lib

from .conftest import PROBLEMS, REPO

llm_server = server_lib.llm_server
pytestmark = pytest.mark.ray


def evolve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "evolve.cli", *args]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return {**clean, "PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": "/nonexistent"}


def test_readme_first_command_runs_200_iterations_and_beats_the_seed(ray_session, tmp_path: Path) -> None:
    address = ray_session.get_runtime_context().gcs_address
    run_dir = tmp_path / "run"
    result = subprocess.run(evolve_cmd("run", str(PROBLEMS / "circle_packing"), "--run-dir", str(run_dir),
                                       "--address", address),
                            env=env(), capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Ray cluster:" in out and "sandbox:" in out and f"archive: {run_dir}" in out
    assert "all 200 iterations done" in out and "best program:" in out and "EVOLVE-BLOCK-START" in out
    assert f"evolve archive top {run_dir}" in out and f"evolve archive show {run_dir}" in out
    seed, best = map(float, re.search(r"seed score: ([\d.]+)\s+best score: ([\d.]+)", out).groups())
    assert seed == pytest.approx(2.40817, abs=1e-4) and best > seed
    assert len(read_programs(run_dir).table) == 201


def test_llm_budget_stops_cleanly_and_the_run_resumes(ray_session, llm_server, tmp_path: Path) -> None:
    llm_server.responder = server_lib.tweak_constant_responder()
    address = ray_session.get_runtime_context().gcs_address
    run_dir = tmp_path / "run"
    base = ["run", str(PROBLEMS / "circle_packing"), "--mutator", "llm", "--model", "fast", "--api-base",
            llm_server.url, "--api-key", "test", "--iterations", "20", "--concurrency", "2", "--run-dir",
            str(run_dir), "--address", address, "--quiet"]
    first = subprocess.run(evolve_cmd(*base, "--max-llm-calls", "3"), env=env(), capture_output=True, text=True,
                           timeout=240)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "--max-llm-calls 3" in first.stdout and "resume:" in first.stderr  # --quiet: hints on stderr
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["stop_reason"] == "mutator_stopped"
    assert json.loads((run_dir / "run.json").read_text())["state"] == "stopped"
    rows = read_programs(run_dir).table.to_pylist()
    assert 1 < len(rows) <= 4  # the seed, then one child per paid answer
    calls_before = sum(llm_server.answered.values())
    # The budget covers the whole run: resuming with a higher limit allows only the difference.
    second = subprocess.run(evolve_cmd(*base, "--max-llm-calls", "5", "--resume"), env=env(), capture_output=True,
                            text=True, timeout=240)
    assert second.returncode == 3, second.stdout + second.stderr
    assert sum(llm_server.answered.values()) - calls_before == 2
    ids = [r["program_id"] for r in read_programs(run_dir).table.to_pylist()]
    assert len(ids) == len(set(ids)) and {r["program_id"] for r in rows} <= set(ids)


def test_ctrl_c_stops_cleanly_with_a_resume_hint(ray_session, tmp_path: Path) -> None:
    address = ray_session.get_runtime_context().gcs_address
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evolve_cmd("run", str(PROBLEMS / "circle_packing"), "--iterations", "100000",
                                       "--run-dir", str(run_dir), "--address", address),
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run_dir / "journal").exists() and len(read_programs(run_dir, columns=["program_id"]).table) >= 20:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted by the user" in out and f"--resume --run-dir {run_dir}" in out
    assert json.loads((run_dir / "run.json").read_text())["state"] == "stopped"
    recorded = read_programs(run_dir).table.num_rows
    assert recorded >= 20 and not list((run_dir / "journal").glob("*.jsonl"))  # all flushed to segments


def test_quiet_private_run_two_lines_no_ray_noise_and_the_islands_agree(llm_server, tmp_path: Path) -> None:
    """`--address local` starts (and stops) a private Ray: Ray's token-auth WARNING must not show, `--quiet` prints
    one summary line and the best score and id, the island named is the one `archive top` names, and identical
    children (never evaluated) do not count as evaluations."""
    from .test_loop import write_tiny_problem

    # Every answer makes the same child of the seed: after the first, identical children (duplicates); children of
    # that child do not contain the SEARCH text (rejected edits).
    llm_server.responder = lambda body: server_lib.Reply(
        content="<<<<<<< SEARCH\nA = 1.0\n=======\nA = 2.0\n>>>>>>> REPLACE")
    tiny = write_tiny_problem(tmp_path / "tiny")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        evolve_cmd("run", str(tiny), "--mutator", "llm", "--model", "fast", "--api-base", llm_server.url,
                   "--api-key", "test", "--iterations", "12", "--concurrency", "2", "--run-dir", str(run_dir),
                   "--address", "local", "--num-cpus", "1", "--quiet"),
        env={**env(), "EVOLVE_RAY_STATE": str(tmp_path / "no-local-ray.json")}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary, best = result.stdout.splitlines()
    assert summary.startswith("stopped: all 12 iterations done after ") and summary.endswith(f"archive {run_dir}")
    assert "WARNING" not in result.stderr and "Token authentication" not in result.stderr
    program, island = re.fullmatch(r"best score: [\d.]+ \(program (\w+), island (\d+)\)", best).groups()
    top = subprocess.run(evolve_cmd("archive", "top", str(run_dir), "-n", "1", "--json"), env=env(),
                         capture_output=True, text=True, timeout=120)
    (first,) = json.loads(top.stdout)
    assert first["program_id"] == program and first["island"] == int(island)
    stats = json.loads((run_dir / "stats.json").read_text())
    rows = read_programs(run_dir).table.to_pylist()
    statuses = [r["status"] for r in rows]
    assert statuses.count("duplicate") >= 1
    assert stats["evaluated_this_session"] == sum(s not in ("duplicate", "invalid_edit") for s in statuses) == 2
