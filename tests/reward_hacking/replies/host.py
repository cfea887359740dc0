"""Shared by the optimizer, tensor_rank, circle_packing and replies folders: run a hostile program file through
the real evaluator (``evolve.evaluation.run_stage``) and check afterwards that the host is unharmed."""

from __future__ import annotations

import hashlib
import resource
import shutil
import time
from pathlib import Path

from evolve.evaluation import run_stage
from evolve.problem import Problem
from evolve.sandbox import make_sandbox
from evolve.types import StageOutcome, program_id_for

from ...conftest import live_descendants

TRUSTED_GROWTH_MB = 400  # the trusted process's peak memory may not grow by more than this during one attack


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def attack(problem: Problem, program: Path, stage: str, seed: int = 0, prefix: str = "") -> StageOutcome:
    """One stage of ``problem`` on the program file (after ``prefix``), then the host checks: no process left below
    the fork server, the problem's files unchanged, the trusted process's peak memory bounded, /tmp not filled."""
    before, peak = tree_hash(problem.root), peak_rss_mb()
    code = prefix + program.read_text()
    outcome = run_stage(problem, stage, code, program_id_for(code), seed)
    assert_host_unharmed(problem, before, peak)
    return outcome


def assert_host_unharmed(problem: Problem, files_before: str, peak_before_mb: float) -> None:
    server = make_sandbox().server.hello.pid
    deadline = time.monotonic() + 3.0
    while (left := live_descendants(server)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a monitor may still be exiting after reporting
    assert not left, f"processes left behind: {left}"
    assert tree_hash(problem.root) == files_before, "the problem's files changed"
    assert peak_rss_mb() - peak_before_mb < TRUSTED_GROWTH_MB, "the trusted process's memory grew"
    assert shutil.disk_usage("/tmp").free > 256 * 1024 * 1024
