"""`evolve run --mutator llm` end to end: local Chat Completions server, local Ray, real archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.archive import read_programs
from tests import llm_server as server_lib

from .conftest import PROBLEMS, REPO

llm_server = server_lib.llm_server
pytestmark = pytest.mark.ray


def evolve_cli(args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update({"PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": "/nonexistent", **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], env=env, capture_output=True, text=True,
                          timeout=240)


def test_llm_run_records_prompts_answers_tokens_and_children(ray_session, llm_server, tmp_path: Path) -> None:
    llm_server.responder = server_lib.tweak_constant_responder()
    address = ray_session.get_runtime_context().gcs_address
    run_dir = tmp_path / "run"
    result = evolve_cli([
        "run", str(PROBLEMS / "circle_packing"), "--mutator", "llm", "--model", "fast", "--model", "strong",
        "--api-base", llm_server.url, "--api-key", "test", "--iterations", "12", "--concurrency", "3",
        "--run-dir", str(run_dir), "--address", address, "--quiet",
    ])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "llm: " in result.stdout and "unusable answers" in result.stdout and "  fast: " in result.stdout
    rows = read_programs(run_dir).table.to_pylist()
    children = [r for r in rows if r["iteration"] > 0]
    stats = json.loads((run_dir / "stats.json").read_text())
    # Identical children are not evaluated twice; they are recorded as "duplicate" rows with their prompt.
    assert len(children) == 12
    served = sum(llm_server.answered.values())
    assert served >= 12
    for row in children:
        assert row["mutator"].startswith("llm:")
        prompt = json.loads(row["prompt"])
        assert prompt[0]["role"] == "system" and "SEARCH" in prompt[0]["content"]
        assert "EVOLVE-BLOCK-START" in "".join(m["content"] for m in prompt)
        assert "<<<<<<< SEARCH" in row["edit"]
        llm = json.loads(row["llm"])
        assert llm["model"] in ("fast", "strong") and llm["prompt_tokens"] > 0 and llm["completion_tokens"] > 0
    evaluated = [r for r in children if r["status"] == "ok"]
    assert evaluated, "the nudged constants give valid packings"
    totals = stats["mutator"]["totals"]
    assert totals["calls"] >= 12 and totals["tokens"] == llm_server.total_tokens
    models = stats["mutator"]["models"]
    assert {"unusable_rate", "mean_latency"} <= set(next(iter(models.values())))


def test_unreachable_endpoint_stops_before_ray(tmp_path: Path) -> None:
    result = evolve_cli(["run", str(PROBLEMS / "circle_packing"), "--mutator", "llm", "--model", "fast",
                         "--api-base", "http://127.0.0.1:9/v1", "--api-key", "x", "--run-dir", str(tmp_path / "r")])
    assert result.returncode != 0
    assert "127.0.0.1:9" in result.stderr and "Ray cluster" not in result.stdout
    assert not (tmp_path / "r").exists()
