"""Which Ray a run uses, and the record of `evolve ray start`: tested with a stand-in process (never a real Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.cli import main
from evolve.ray_local import (
    LocalCluster,
    RayLocalError,
    TargetKind,
    choose_target,
    is_running,
    start_cluster,
    start_command,
    stop_cluster,
)

REAL_POPEN = subprocess.Popen  # the `state` fixture replaces subprocess.Popen: no test here may start a real Ray


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "local-ray.json"
    monkeypatch.setenv("EVOLVE_RAY_STATE", str(path))

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("these tests never start a real Ray")

    monkeypatch.setattr("evolve.ray_local.subprocess.Popen", no_ray)
    return path


@pytest.fixture
def fake_head(tmp_path: Path):
    """A process whose command line looks like our `ray start --head --block --temp-dir=...`."""
    temp_dir = tmp_path / "ray-tmp"
    proc = REAL_POPEN([sys.executable, "-c", "import time; time.sleep(120)", "start", "--head", "--block",
                             f"--temp-dir={temp_dir}"])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 30
    while b"--head" not in cmdline.read_bytes():  # until the child has exec'd
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield proc, temp_dir
    proc.kill()
    proc.wait()


def record(path: Path, pid: int, temp_dir: Path, python: str = sys.executable) -> LocalCluster:
    cluster = LocalCluster(pid=pid, address="10.0.0.1:6390", temp_dir=str(temp_dir), python=python, num_cpus=2,
                           auth_mode="token", started_at=time.time())
    path.write_text(json.dumps(cluster.to_dict()))
    return cluster


def test_explicit_addresses_decide(state: Path) -> None:
    assert choose_target("local").kind is TargetKind.PRIVATE
    given = choose_target("10.1.2.3:6379")
    assert given.kind is TargetKind.GIVEN and given.address == "10.1.2.3:6379" and not given.on_this_machine
    nothing = choose_target(None)
    assert nothing.kind is TargetKind.PRIVATE and not nothing.note


def test_a_running_head_is_joined_and_local_still_runs_apart(state: Path, fake_head) -> None:
    proc, temp_dir = fake_head
    cluster = record(state, proc.pid, temp_dir)
    assert is_running(cluster)
    target = choose_target(None)
    assert target.kind is TargetKind.EVOLVE and target.address == "10.0.0.1:6390" and target.on_this_machine
    assert "evolve ray start" in target.describe()
    assert choose_target("local").kind is TargetKind.PRIVATE


def test_a_stale_record_is_removed_and_never_captures_a_run(state: Path, tmp_path: Path) -> None:
    gone = REAL_POPEN([sys.executable, "-c", "pass"])
    gone.wait()
    record(state, gone.pid, tmp_path / "ray-tmp")
    target = choose_target(None)
    assert target.kind is TargetKind.PRIVATE and "is gone" in target.note
    assert not state.exists()


def test_a_head_of_another_python_is_not_joined(state: Path, fake_head) -> None:
    proc, temp_dir = fake_head
    record(state, proc.pid, temp_dir, python="/usr/bin/true")
    target = choose_target(None)
    assert target.kind is TargetKind.PRIVATE and "/usr/bin/true" in target.note


def test_stop_ends_only_the_recorded_process(state: Path, fake_head) -> None:
    proc, temp_dir = fake_head
    record(state, proc.pid, temp_dir)
    with pytest.raises(RayLocalError, match="already runs"):
        start_cluster(path=state)
    stopped = CliRunner().invoke(main, ["ray", "stop"])
    assert stopped.exit_code == 0 and "stopped the local Ray at 10.0.0.1:6390" in stopped.output
    proc.wait(timeout=10)  # ended (reaped by the stop already: its status is not ours to see)
    assert not state.exists()
    assert stop_cluster(state) is None
    again = CliRunner().invoke(main, ["ray", "stop"])
    assert again.exit_code == 0 and "nothing to stop" in again.output


def test_status_says_whether_it_runs(state: Path, fake_head) -> None:
    none = CliRunner().invoke(main, ["ray", "status"])
    assert none.exit_code == 1 and "each `evolve run` starts a private instance" in none.output
    proc, temp_dir = fake_head
    record(state, proc.pid, temp_dir)
    running = CliRunner().invoke(main, ["ray", "status", "--json"])
    assert running.exit_code == 0 and json.loads(running.output)["running"] is True


def test_the_start_command_blocks_with_its_own_ports_and_temp_dir(tmp_path: Path) -> None:
    command = start_command(3, tmp_path, 40000)
    assert command[:5] == [sys.executable, "-m", "ray.scripts.scripts", "start", "--head"]
    assert "--block" in command and "--port=40000" in command and "--num-cpus=3" in command
    assert f"--temp-dir={tmp_path}" in command and "--include-dashboard=false" in command
    ports = [arg for arg in command if arg.startswith(("--ray-client-server-port=", "--dashboard-agent-listen-port="))]
    assert len(ports) == 2 and all(arg.split("=")[1] not in ("10001", "52365") for arg in ports)
    assert "--include-dashboard=true" in start_command(3, tmp_path, 40000, dashboard_port=40001)


def test_run_flags_for_ray_are_checked_before_anything_starts(tmp_path: Path) -> None:
    from .conftest import PROBLEMS

    result = CliRunner().invoke(main, ["run", str(PROBLEMS / "circle_packing"), "--dashboard", "--address",
                                       "10.1.2.3:6379", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--dashboard" in result.output and not (tmp_path / "run").exists()
