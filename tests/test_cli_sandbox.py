"""``evolve sandbox check`` (``evolve/cli_sandbox.py``): the level here, a requirement a host misses, every node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.cli_sandbox import sandbox

from .conftest import PROBLEMS, REPO


def test_check_prints_this_hosts_level() -> None:
    result = CliRunner().invoke(sandbox, ["check", str(PROBLEMS / "circle_packing")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("this host: sandbox: session+rlimits")


def test_a_host_that_misses_the_requirement_fails_with_the_reason(tmp_path: Path) -> None:
    problem = tmp_path / "p"
    problem.mkdir()
    for name in ("initial_program.py", "evaluator.py", "render.py"):
        (problem / name).write_text((PROBLEMS / "circle_packing" / name).read_text())
    toml = (PROBLEMS / "circle_packing" / "problem.toml").read_text()
    (problem / "problem.toml").write_text(toml + '\n[sandbox]\nlayers = "session+rlimits"\n')
    result = CliRunner().invoke(sandbox, ["check", str(problem), "--require", "pidns", "--json"])
    assert result.exit_code == 1
    (level,) = json.loads(result.stdout)
    assert not level["ok"] and "pidns" in level["missing"] and level["level"] == "session+rlimits"


@pytest.mark.ray
def test_every_node_of_a_cluster_is_asked(ray_session) -> None:
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "evolve.cli_sandbox", "check", "--address", address, "--json"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    levels = json.loads(result.stdout)
    nodes = {n["NodeID"] for n in ray_session.nodes() if n["Alive"]}
    assert {level["node"] for level in levels} == nodes and all(level["ok"] for level in levels)
    assert all(level["level"].startswith("session+rlimits") for level in levels)
