"""Running on a Ray cluster: the launcher config, and a simulated multi-node cluster on this machine.

The multi-node runs happen in a subprocess (tests/cluster_scenarios/heterogeneous.py): this pytest process may
already be connected to the session's local Ray instance, and a process can join only one Ray cluster.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from evolve.cluster import ClusterView, ShippingError, problem_runtime_env, unmet_requirements
from evolve.problem import load_problem

from .conftest import PROBLEMS, REPO

CLUSTER_YAML = REPO / "cluster.yaml"
SCENARIO = REPO / "tests" / "cluster_scenarios" / "heterogeneous.py"
RESULT_PREFIX = "CLUSTER-RESULT "


# ---------------------------------------------------------------------------------------------- cluster.yaml
@pytest.fixture
def config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validated(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before it talks to the cloud: fill defaults, merge commands, validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def setup_commands_of(prepared: dict[str, Any], node_type: str) -> list[str]:
    """The setup commands the launcher runs on a node of ``node_type``.

    A node type's own ``worker_setup_commands`` replace the merged global list (``setup_commands`` +
    ``worker_setup_commands``) entirely; the head runs ``setup_commands`` + ``head_setup_commands``.
    """
    if node_type == prepared["head_node_type"]:
        return prepared["head_setup_commands"]
    return prepared["available_node_types"][node_type].get("worker_setup_commands", prepared["worker_setup_commands"])


def installs_evolve(commands: list[str]) -> bool:
    return any("pip install" in c and "evolve" in c for c in commands)


def installs_cupy(commands: list[str]) -> bool:
    return any("pip install" in c and ("[gpu]" in c or "cupy" in c) for c in commands)


def test_cluster_yaml_passes_rays_own_validation(config: dict[str, Any]) -> None:
    prepared = validated(config)
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == {"head", "cpu", "gpu"}


@pytest.mark.parametrize("break_it", [
    lambda c: c["available_node_types"]["cpu"].update(min_worker=1),  # misspelt key
    lambda c: c["available_node_types"]["gpu"].pop("resources"),  # required key
    lambda c: c.update(head_node_type="nonexistent"),
    lambda c: c["available_node_types"]["cpu"].update(min_workers=99),  # more than max_workers in total
])
def test_the_validation_used_catches_broken_configs(config: dict[str, Any], break_it: Any) -> None:
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validated(config)


def test_head_node_does_no_evaluation_work(config: dict[str, Any]) -> None:
    prepared = validated(config)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    starts = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head" in starts and "--num-cpus=0" in starts


def test_cpu_and_gpu_worker_types_install_the_right_packages(config: dict[str, Any]) -> None:
    prepared = validated(config)
    types = prepared["available_node_types"]
    gpu_types = [name for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    cpu_types = [name for name, t in types.items()
                 if name != prepared["head_node_type"] and not t["resources"].get("GPU")]
    assert gpu_types == ["gpu"] and cpu_types == ["cpu"]
    for name in types:
        assert installs_evolve(setup_commands_of(prepared, name)), f"{name} nodes would not have evolve installed"
    assert installs_cupy(setup_commands_of(prepared, "gpu"))
    assert not installs_cupy(setup_commands_of(prepared, "cpu"))
    assert not installs_cupy(setup_commands_of(prepared, "head"))
    # `evolve run` refuses a problem with GPU stages unless a GPU node is up when it starts.
    assert types["gpu"]["min_workers"] >= 1
    assert "gpu" in types["gpu"]["docker"]["worker_image"] and "cpu" in prepared["docker"]["image"]


def test_images_match_the_local_ray_and_python(config: dict[str, Any]) -> None:
    """Driver and cluster must run the same Ray and Python versions; bump the images when Ray is bumped."""
    expected = f"rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-"
    images = [config["docker"]["image"]] + [
        t["docker"]["worker_image"] for t in config["available_node_types"].values() if "docker" in t]
    assert images and all(image.startswith(expected) for image in images), images


def test_file_mounts_ship_the_wheel_and_the_problems(config: dict[str, Any]) -> None:
    mounts = config["file_mounts"]
    assert mounts["~/problems"] == "./problems" and (REPO / "problems").is_dir()
    assert mounts["~/evolve-dist"] == "./dist"  # built by the user: `pip wheel --no-deps -w dist .`
    assert any("~/evolve-dist/evolve-" in c for c in config["setup_commands"])


def test_cluster_requires_the_full_sandbox_and_laptops_do_not(config: dict[str, Any], monkeypatch) -> None:
    from evolve.sandbox import SandboxConfig, parse_layers
    from evolve.sandbox.config import REQUIRE_ENV

    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    assert SandboxConfig.from_table(None).require == ""  # a laptop runs with what its host allows
    env = dict(o.split("=", 1)[1].split("=", 1) for o in config["docker"]["run_options"] if o.startswith("--env="))
    assert env[REQUIRE_ENV] == "full"
    monkeypatch.setenv(REQUIRE_ENV, env[REQUIRE_ENV])
    assert SandboxConfig.from_table(None).required_layers == parse_layers("full")
    # A problem's own require adds to the cluster's floor; it cannot lower it.
    assert SandboxConfig.from_table({"require": "pidns"}).required_layers == parse_layers("full")


# ---------------------------------------------------------------------------------------------- simulated cluster
@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both scenarios on one simulated cluster (starting one costs ~10-20 s here)."""
    work = tmp_path_factory.mktemp("cluster")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(SCENARIO), str(work), "placement", "node_loss"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=280)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, (
        f"scenario failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def assert_recorded_exactly_once(run: dict[str, Any]) -> None:
    """Budget finished; one archive row per program and per iteration; identical children are the only gap."""
    assert run["stop_reason"] == "budget" and run["done"] == run["budget"]
    rows = run["rows"]
    ids = Counter(r["program_id"] for r in rows)
    iterations = Counter(r["iteration"] for r in rows)
    assert max(ids.values()) == 1, f"programs written more than once: {[k for k, n in ids.items() if n > 1]}"
    assert max(iterations.values()) == 1
    assert len(rows) == 1 + run["budget"]  # the seed, then one row per iteration (duplicates included)
    assert set(iterations) <= set(range(run["budget"] + 1)) and 0 in iterations
    assert run["deduplicated_rows"] == len(rows) and not run["journal_files"]


def stage_nodes(run: dict[str, Any], stage: str) -> Counter[str]:
    return Counter(s["node"] for r in run["rows"] for s in r["stages"] if s["stage"] == stage)


def was_evaluated(row: dict[str, Any]) -> bool:
    """Rows of rejected edits and duplicates carry only the pseudo-stage "edit": nothing ran."""
    return any(stage["stage"] != "edit" for stage in row["stages"])


@pytest.mark.ray
def test_gpu_stage_runs_only_on_the_gpu_node_and_cpu_stage_spreads(cluster_runs: dict[str, Any]) -> None:
    nodes = cluster_runs["nodes"]
    run = cluster_runs["placement"]
    assert_recorded_exactly_once(run)
    evaluated = [r for r in run["rows"] if was_evaluated(r)]
    assert evaluated and all(r["status"] == "ok" for r in evaluated), Counter(r["status"] for r in run["rows"])
    assert set(stage_nodes(run, "bench")) == {nodes["gpu"]}
    assert sum(stage_nodes(run, "bench").values()) == len(evaluated)
    assert set(stage_nodes(run, "check")) == {nodes["cpu"], nodes["gpu"]}, stage_nodes(run, "check")
    # Ray itself granted the GPU-stage task a GPU (the evaluator read it inside the task).
    for row in evaluated:
        assert json.loads(row["artifacts"]["bench.gpu_ids"]), row["artifacts"]
    assert not run["leftover_marks"], "every evaluation that started also finished"


@pytest.mark.ray
def test_losing_a_worker_node_mid_run_loses_nothing(cluster_runs: dict[str, Any]) -> None:
    nodes = cluster_runs["nodes"]
    run = cluster_runs["node_loss"]
    killed = nodes["cpu"]
    assert run["killed_at_done"] is not None and run["killed_at_done"] < run["budget"], "node was not killed mid-run"
    assert killed not in run["alive_after"]
    assert_recorded_exactly_once(run)
    # Evaluations that died with the node: started there (a marker) and never finished (the marker was left).
    lost = [m for m in run["leftover_marks"] if m["node"] == killed]
    assert lost, f"no evaluation was running on the node when it died: {run['running_at_kill']}"
    assert all(m["node"] == killed for m in run["leftover_marks"])
    by_id = {r["program_id"]: r for r in run["rows"]}
    for mark in lost:
        row = by_id[mark["program_id"]]  # still recorded, once
        outcome = next(s for s in row["stages"] if s["stage"] == mark["stage"])
        assert outcome["status"] == "ok" and outcome["node"] not in ("", killed), outcome
    # Nothing is blamed on the candidates: no system_error left, every evaluated program passed.
    assert all(r["status"] == "ok" for r in run["rows"] if was_evaluated(r)), Counter(r["status"] for r in run["rows"])
    assert set(stage_nodes(run, "bench")) == {nodes["gpu"]}


# ---- what the driver checks before it starts ------------------------------------------------------------------------

def _view(*nodes: dict[str, float]) -> ClusterView:
    totals: dict[str, float] = {}
    for node in nodes:
        for key, value in node.items():
            totals[key] = totals.get(key, 0.0) + value
    return ClusterView(nodes=len(nodes), cpus=totals.get("CPU", 0.0), gpus=totals.get("GPU", 0.0),
                       resources=totals, node_resources=nodes)


def test_gpu_stage_refused_on_a_cluster_without_gpus() -> None:
    problem = load_problem(PROBLEMS / "matmul")
    reason, heldout = unmet_requirements(problem, _view({"CPU": 0.0}, {"CPU": 8.0}))
    assert "'bench'" in reason and "GPU=1" in reason and "no GPU" in reason and "evolve eval" in reason
    assert "'heldout'" in heldout  # held-out stages are checked too: oversight runs them on the same cluster
    assert unmet_requirements(problem, _view({"CPU": 0.0}, {"CPU": 8.0}, {"CPU": 1.0, "GPU": 1.0})) == []


def test_a_stage_must_fit_on_one_node() -> None:
    problem = load_problem(PROBLEMS / "matmul")
    greedy = dataclasses.replace(problem.stages[2], cpus=2.0)
    problem = dataclasses.replace(problem, stages=(*problem.stages[:2], greedy))
    # Enough CPUs and a GPU in total, but never both on the same node.
    (reason,) = unmet_requirements(problem, _view({"CPU": 8.0}, {"CPU": 1.0, "GPU": 1.0}))
    assert "CPU=2, GPU=1" in reason


def test_default_concurrency_counts_each_nodes_slots() -> None:
    assert _view({"CPU": 4.0}, {"CPU": 1.0, "GPU": 1.0}).default_concurrency() == 10


def test_evolve_run_refuses_matmul_without_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "evolve.cli", "run", str(PROBLEMS / "matmul"), "--num-cpus", "1",
         "--run-dir", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "cannot run this problem" in result.stderr and "evolve eval" in result.stderr
    assert not (tmp_path / "run").exists()


def test_problem_folder_size_is_checked_before_shipping(tmp_path: Path) -> None:
    (tmp_path / "problem.toml").write_text((PROBLEMS / "circle_packing" / "problem.toml").read_text())
    for name in ("initial_program.py", "evaluator.py", "render.py"):
        (tmp_path / name).write_text((PROBLEMS / "circle_packing" / name).read_text())
    (tmp_path / "data.bin").write_bytes(b"\0" * 4096)
    problem = load_problem(tmp_path)
    env = problem_runtime_env(problem)
    assert env["working_dir"] == str(problem.root) and env["env_vars"]
    with pytest.raises(ShippingError, match="MiB"):
        problem_runtime_env(problem, limit=1024)
