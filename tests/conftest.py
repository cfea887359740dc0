"""Shared fixtures. One local Ray instance per test session (it takes seconds to start)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = REPO / "problems"


def live_descendants(root_pid: int) -> list[int]:
    """Every living (non-zombie) process below ``root_pid``, read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()
            if fields[0] != b"Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {root_pid}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found |= frontier
    return sorted(found)


def has_gpu() -> bool:
    """True when a CUDA device is usable through CuPy."""
    try:
        import cupy  # type: ignore[import-not-found]

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, or no device
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none found through CuPy)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that needs one. It declares one (fake) GPU so that GPU stages can
    be scheduled; tests that use it replace GPU work with CPU stand-ins they define themselves."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def problem_copy(tmp_path: Path):
    """Copy a shipped problem folder into tmp_path so a test can edit it freely."""

    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(PROBLEMS / name, dest)
        return dest

    return copy


os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session", autouse=True)
def every_run_audits(tmp_path_factory):
    """`evolve archive audit RUN --json` must work on every run the suite makes (issue 14's acceptance): after the
    session, audit each run folder under the session's temporary directory."""
    yield
    import json

    from click.testing import CliRunner

    from evolve.cli_oversight import audit_command
    from evolve.run_info import is_run_dir

    base = tmp_path_factory.getbasetemp()
    failures = []
    for folder, subdirs, _ in os.walk(base):
        path = Path(folder)
        if not is_run_dir(path):
            continue
        subdirs.clear()  # a run's own folders hold no runs
        result = CliRunner().invoke(audit_command, [str(path), "--json"])
        try:
            json.loads(result.stdout)
        except ValueError:
            failures.append(f"{path}: exit {result.exit_code}: {result.output[-300:]}")
            continue
        if result.exit_code != 0:
            failures.append(f"{path}: exit {result.exit_code}: {result.output[-300:]}")
    assert not failures, "audit failed on runs the suite made:\n" + "\n".join(failures)
