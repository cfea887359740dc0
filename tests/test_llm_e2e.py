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
        "--run-dir", str(run_dir), "--address", address,
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


# -- an endpoint answering garbage (issue 12) -------------------------------------------------------------------------

def garbage_run(server: server_lib.ChatServer, address: str, tmp_path: Path, *args: str,
                **llm: object) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``evolve run`` on circle_packing against ``server``, with fast retries set in a user config file."""
    settings = {"retries": 2, "backoff": 0.02, "backoff_max": 0.1, "patience": 60, **llm}
    config = tmp_path / "config.toml"
    config.write_text("[llm]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    run_dir = tmp_path / "run"
    result = evolve_cli(["run", str(PROBLEMS / "circle_packing"), "--mutator", "llm", "--model", "fast",
                         "--api-base", server.url, "--api-key", "test", "--run-dir", str(run_dir),
                         "--address", address, *args], extra_env={"EVOLVE_CONFIG": str(config)})
    return result, run_dir


def transport_blamed_on_children(rows: list[dict]) -> list[dict]:
    """Child rows recorded as the mutator's fault although the endpoint never answered them."""
    blamed = []
    for row in rows:
        llm = json.loads(row["llm"] or "{}")
        if row["iteration"] > 0 and row["status"] == "invalid_edit" and llm.get("error"):
            blamed.append(row)
    return blamed


def test_an_always_garbage_endpoint_stops_the_run_on_patience_with_its_budget_intact(
        ray_session, llm_server, tmp_path: Path) -> None:
    llm_server.responder = server_lib.garbage_responder(kinds=("not_json", "html", "cut_json"))
    result, run_dir = garbage_run(llm_server, ray_session.get_runtime_context().gcs_address, tmp_path,
                                  "--iterations", "500", "--concurrency", "2", "--max-llm-calls", "30", patience=2)
    out = result.stdout + result.stderr
    assert result.returncode == 3, out  # the mutator stopped the run: resumable
    assert "has failed every call for" in out and "patience 2 s" in out and "--resume" in out
    assert "--max-llm-calls" not in out  # calls without an answer never used up the call budget
    stats = json.loads((run_dir / "stats.json").read_text())
    totals = stats["mutator"]["totals"]
    assert totals["calls"] == 0 and totals["tokens"] == 0
    assert totals["failed_calls"] >= 1 and sum(totals["failed_by_kind"].values()) == totals["failed_calls"]
    assert set(totals["failed_by_kind"]) <= {"bad_json", "wrong_content_type"}
    assert sum(stats["mutator"]["failures"].values()) == llm_server.malformed == len(llm_server.requests)
    assert stats["done"] < 500


def test_no_child_is_blamed_for_an_endpoint_that_never_answers(ray_session, llm_server, tmp_path: Path) -> None:
    llm_server.responder = server_lib.garbage_responder(kinds=("not_json", "no_choices", "truncated"))
    result, run_dir = garbage_run(llm_server, ray_session.get_runtime_context().gcs_address, tmp_path,
                                  "--iterations", "500", "--concurrency", "2", patience=2)
    out = result.stdout + result.stderr
    assert result.returncode == 3, out
    rows = read_programs(run_dir).table.to_pylist()
    children = [r for r in rows if r["iteration"] > 0]
    assert not transport_blamed_on_children(rows)
    assert {r["status"] for r in children} <= {"system_error"}
    calls = [json.loads(row["llm"])["calls"] for row in children]
    for row, made in zip(children, calls, strict=True):  # every call made for the iteration, with its prompt
        assert row["prompt"] and made and not any(c["answered"] for c in made)
    # Asked again before being recorded; only a child whose unanswered call came back while the run was stopping
    # (patience ran out meanwhile) is recorded after one ask.
    assert children and max(len(made) for made in calls) >= 2
    assert "  failures: " in result.stdout and "failed calls (" in result.stdout and "last good answer" in out


def test_garbage_on_every_third_call_costs_retries_not_children_nor_budget(
        ray_session, llm_server, tmp_path: Path) -> None:
    llm_server.responder = server_lib.garbage_responder(
        every=3, kinds=("not_json", "truncated", "html", "no_choices", "choices_not_a_list"),
        good=server_lib.tweak_constant_responder())
    result, run_dir = garbage_run(llm_server, ray_session.get_runtime_context().gcs_address, tmp_path,
                                  "--iterations", "40", "--concurrency", "1", "--max-llm-calls", "6")
    out = result.stdout + result.stderr
    assert result.returncode == 3, out
    assert "LLM budget reached: --max-llm-calls 6 (" in out
    rows = read_programs(run_dir).table.to_pylist()
    assert not transport_blamed_on_children(rows)
    stats = json.loads((run_dir / "stats.json").read_text())
    totals = stats["mutator"]["totals"]
    assert totals["calls"] == 6 == sum(llm_server.answered.values())
    assert totals["retries"] == llm_server.malformed >= 2 and totals["failed_calls"] == 0
    assert totals["tokens"] == llm_server.total_tokens
    children = [r for r in rows if r["iteration"] > 0]
    assert 1 <= len(children) <= 6 and any(r["status"] == "ok" for r in children)
