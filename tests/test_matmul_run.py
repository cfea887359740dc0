"""problems/matmul evolving on a local Ray instance with a declared (fake) GPU: the cascade's scheduling.

The `bench` stage is replaced by a CPU stand-in defined here (it scores by code length, not a GPU measurement);
`compile` and `cpu_check` are the real stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolve.archive import read_programs
from evolve.loop import Evolution, StopReason
from evolve.mutators.scripted import ScriptedMutator
from evolve.problem import load_problem
from evolve.query import RunArchive
from evolve.settings import RunSettings

from .test_matmul import STAND_IN, needs_cuda_compiler, needs_host_compiler
from .test_oversight_runs import audited

pytestmark = [pytest.mark.ray, needs_cuda_compiler, needs_host_compiler]

RECORDING_STAND_IN = STAND_IN + '''

import os

_score, _compile, _cpu_check = bench, compile, cpu_check


def _granted():
    # Ray sets CUDA_VISIBLE_DEVICES to the granted GPUs ("" for a task granted none).
    return 1.0 if os.environ.get("CUDA_VISIBLE_DEVICES", "") != "" else 0.0


def _with(report, name):
    from evolve import StageReport

    if isinstance(report, dict):
        return {**report, name: _granted()}
    return StageReport({**report.metrics, name: _granted()}, report.artifacts)


def bench(candidate):
    return _with(_score(candidate), "gpu_granted")


def compile(candidate):
    return _with(_compile(candidate), "compile_gpu_granted")


def cpu_check(candidate):
    return _with(_cpu_check(candidate), "cpu_check_gpu_granted")


def heldout(candidate):
    return _with({"heldout_cublas_fraction": 1000.0 / len(candidate.code)}, "heldout_gpu_granted")
'''


def test_matmul_cascade_runs_on_ray_with_gpu_stage_scheduling(ray_session, problem_copy, tmp_path: Path) -> None:
    root = problem_copy("matmul")
    (root / "standin.py").write_text(RECORDING_STAND_IN)
    toml = root / "problem.toml"
    toml.write_text(toml.read_text().replace('evaluator = "evaluator.py"', 'evaluator = "standin.py"'))
    problem = load_problem(root)
    settings = RunSettings(iterations=4, concurrency=2, islands=1, seed=3)
    run_dir = tmp_path / "run"
    summary = Evolution(problem, settings, ScriptedMutator(), run_dir, "matmul-test").run()
    assert summary.stop_reason is StopReason.BUDGET
    rows = read_programs(run_dir).table.to_pylist()
    seed = next(r for r in rows if r["iteration"] == 0)
    stages = json.loads(seed["stages"])
    assert [s["stage"] for s in stages] == ["compile", "cpu_check", "bench"]
    assert all(s["status"] == "ok" for s in stages)
    metrics = json.loads(seed["metrics"])
    assert metrics["gpu_granted"] == 1.0 and metrics["registers"] > 0
    assert metrics["compile_gpu_granted"] == 0.0 and metrics["cpu_check_gpu_granted"] == 0.0
    for row in rows:
        for stage in json.loads(row["stages"]):
            if stage["stage"] == "bench":
                assert stage["metrics"]["gpu_granted"] == 1.0
    assert seed["cell"] is not None and seed["score"] > 0
    # Oversight checked the seed: its held-out stage ran on the GPU, and it is promoted.
    with RunArchive(run_dir) as archive:
        (heldout, *_) = archive.events(["heldout"], program_id=seed["program_id"])
        standing = archive.events(["standing"], program_id=seed["program_id"])[-1]
    assert heldout["data"]["stages"][0]["metrics"]["heldout_gpu_granted"] == 1.0
    assert standing["data"]["standing"] == "promoted"
    assert any(e["kind"] == "promotion" for e in audited(run_dir))
