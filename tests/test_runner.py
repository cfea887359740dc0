"""The warm runner of `evolve ray start` (`evolve/runner.py`): its checks on their own, then end to end through the
`evolve` command against a real Ray head and runner started by `evolve ray start` (one for the module)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from evolve.runner import RunnerRecord, code_fingerprint, process_wide_difference, runner_status

REPO = Path(__file__).resolve().parents[1]
CIRCLES = REPO / "problems" / "circle_packing"
EVOLVE = [sys.executable, "-c", "import sys; from evolve.launch import entry; sys.argv[0] = 'evolve'; entry()"]


def test_process_wide_variables_must_match_and_per_run_ones_need_not() -> None:
    mine = {"PATH": "/a", "HOME": "/root", "RAY_CLIENT_MODE": "0", "OPENAI_API_KEY": "x"}
    theirs = {"PATH": "/b", "HOME": "/root", "OPENAI_API_KEY": "y", "TERM": "xterm"}  # Ray sets RAY_CLIENT_MODE=0
    assert process_wide_difference(mine, theirs) == []
    assert process_wide_difference(mine, {**theirs, "PYTHONPATH": "/x", "EVOLVE_FAILPOINTS": "p", "LANG": "C"}) == [
        "EVOLVE_FAILPOINTS", "LANG", "PYTHONPATH"]
    assert process_wide_difference({**mine, "RAY_AUTH_MODE": "token"}, theirs) == ["RAY_AUTH_MODE"]
    # What differs between two logins of the same user is not process-wide.
    assert process_wide_difference({**mine, "XDG_SESSION_ID": "3", "LC_TERMINAL": "iTerm2"}, theirs) == []


def test_the_code_fingerprint_sees_an_edited_added_or_removed_module(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "a.py"
    module.write_text("x = 1\n")
    before = code_fingerprint((tmp_path,))
    assert code_fingerprint((tmp_path,)) == before
    module.write_text("x = 22\n")
    edited = code_fingerprint((tmp_path,))
    assert edited != before
    (tmp_path / "pkg" / "b.py").write_text("")
    assert code_fingerprint((tmp_path,)) != edited
    assert str(REPO / "evolve" / "runner.py") in code_fingerprint()  # the default: evolve and evaluators


def test_a_record_of_a_dead_or_reused_pid_is_not_a_runner(tmp_path: Path) -> None:
    assert RunnerRecord.read(tmp_path) is None
    (tmp_path / "evolve-runner.json").write_text(json.dumps(
        {"pid": os.getpid(), "socket": str(tmp_path / "s"), "log": "", "started_at": 0.0}))
    record = RunnerRecord.read(tmp_path)
    assert record is not None and not record.alive() and not record.ready()  # this pid is pytest, not a runner


# ---------------------------------------------------------------------------------------------------------------
# End to end


@dataclass
class Warm:
    env: dict[str, str]
    temp_dir: Path
    pid: int

    def marker(self) -> str:
        return f"run in its warm runner (pid {self.pid})"


def evolve(warm: Warm, *args: object, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EVOLVE, *map(str, args)], env={**warm.env, **env}, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def ray_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evolve.cli", "ray", *args], env=env, capture_output=True,
                          text=True, timeout=240, cwd=REPO)


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("runner") / "local-ray.json"
    temp_dir = Path(tempfile.mkdtemp(prefix="evr-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("EVOLVE_NO_RUNNER", "RAY_ADDRESS", "EVOLVE_RUNNER")}
    env["EVOLVE_RAY_STATE"] = str(state)
    started = ray_command(env, "start", "--temp-dir", str(temp_dir), "--json")
    assert started.returncode == 0, started.stderr
    runner = json.loads(started.stdout)["runner"]
    assert runner is not None, started.stdout
    yield Warm(env, temp_dir, runner["pid"])
    record = RunnerRecord.read(temp_dir)
    stopped = ray_command(env, "stop")
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert record is None or not record.alive(), "`evolve ray stop` left the runner running"
    assert not (temp_dir / "evolve-runner.sock").exists()


def idle(warm: Warm, timeout: float = 120) -> None:
    """Wait until the runner takes runs again (a run that just ended may still be settling)."""
    deadline = time.monotonic() + timeout
    while True:
        said = runner_status(warm.temp_dir)
        assert said is not None and said["pid"] == warm.pid, said
        if not said["busy"]:
            return
        assert time.monotonic() < deadline, "the runner stayed busy"
        time.sleep(0.1)


def started(run_dir: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait until the run in ``run_dir`` has begun (its folder is written when the loop starts)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "run.json").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.1)
    time.sleep(1.0)  # a few evaluations in


def test_a_run_is_handed_to_the_runner_and_behaves_as_the_command(warm: Warm, tmp_path: Path) -> None:
    status = ray_command(warm.env, "status", "--json")
    assert json.loads(status.stdout)["runner"]["pid"] == warm.pid
    idle(warm)
    result = evolve(warm, "run", CIRCLES, "--iterations", "4", "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert warm.marker() in result.stdout and "(4/4 iterations)" in result.stdout
    assert json.loads((tmp_path / "run" / "run.json").read_text())["state"] == "finished"
    # Errors and usage errors come back with their exit status and message.
    refused = evolve(warm, "run", CIRCLES, "--resume", "--run-dir", tmp_path / "nothing")
    assert refused.returncode == 1 and str(tmp_path / "nothing") in refused.stderr
    assert "Traceback" not in refused.stderr
    usage = evolve(warm, "run", CIRCLES, "--iterations", "0")
    assert usage.returncode == 2 and "--iterations" in usage.stderr


def test_a_run_with_another_process_wide_environment_is_refused_and_runs_in_its_own_driver(
        warm: Warm, tmp_path: Path) -> None:
    result = evolve(warm, "run", CIRCLES, "--iterations", "2", "--run-dir", tmp_path / "run", PYTHONHASHSEED="7")
    assert result.returncode == 0, result.stderr
    assert "did not take this run" in result.stderr and "PYTHONHASHSEED" in result.stderr
    assert "warm runner (pid" not in result.stdout and "(2/2 iterations)" in result.stdout


def test_ctrl_c_stops_the_run_and_a_run_meanwhile_gets_its_own_driver(warm: Warm, tmp_path: Path) -> None:
    idle(warm)
    long = subprocess.Popen([*EVOLVE, "run", str(CIRCLES), "--iterations", "100000", "--run-dir",
                             str(tmp_path / "long")], env=warm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        started(tmp_path / "long", long)
        assert runner_status(warm.temp_dir)["busy"]
        second = evolve(warm, "run", CIRCLES, "--iterations", "2", "--run-dir", tmp_path / "second")
        assert second.returncode == 0 and "another run is in it" in second.stderr, second.stderr
        long.send_signal(signal.SIGINT)
        out, err = long.communicate(timeout=120)
    finally:
        long.kill()
    assert long.returncode == 130, err
    assert warm.marker() in out and "interrupted" in out
    assert json.loads((tmp_path / "long" / "run.json").read_text())["stop_reason"] == "interrupted"


def test_a_killed_caller_stops_its_run_which_resumes_in_the_runner(warm: Warm, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    idle(warm)
    with open(tmp_path / "out.txt", "w") as out:
        caller = subprocess.Popen([*EVOLVE, "run", str(CIRCLES), "--iterations", "100000", "--run-dir",
                                   str(run_dir)], env=warm.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        started(run_dir, caller)
        caller.kill()
        caller.wait()
    deadline = time.monotonic() + 60
    while json.loads((run_dir / "run.json").read_text())["state"] == "running":
        assert time.monotonic() < deadline, "the runner did not stop the run of a dead caller"
        time.sleep(0.2)
    idle(warm)  # then what the stopped run left in flight is waited for
    resumed = evolve(warm, "run", CIRCLES, "--resume", "--run-dir", run_dir, "--more", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert warm.marker() in resumed.stdout


def test_a_termination_signal_stops_the_run_and_then_ends_the_caller_by_it(warm: Warm, tmp_path: Path) -> None:
    idle(warm)
    caller = subprocess.Popen([*EVOLVE, "run", str(CIRCLES), "--iterations", "100000", "--run-dir",
                               str(tmp_path / "run")], env=warm.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        started(tmp_path / "run", caller)
        caller.send_signal(signal.SIGTERM)
        out, err = caller.communicate(timeout=120)
    finally:
        caller.kill()
    assert caller.returncode == -signal.SIGTERM, err  # as a run of its own would end (but cleanly stopped)
    assert warm.marker() in out and "interrupted" in out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["state"] == "stopped"


def test_a_dead_runner_costs_nothing_but_speed_and_ray_start_brings_one_back(warm: Warm, tmp_path: Path) -> None:
    idle(warm)
    os.kill(warm.pid, signal.SIGKILL)
    result = evolve(warm, "run", CIRCLES, "--iterations", "2", "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "warm runner (pid" not in result.stdout and "(2/2 iterations)" in result.stdout
    again = ray_command(warm.env, "start")
    assert again.returncode == 0 and "started its warm runner" in again.stdout, again.stderr
    record = RunnerRecord.read(warm.temp_dir)
    assert record is not None and record.ready()
    warm.pid = record.pid
    result = evolve(warm, "run", CIRCLES, "--iterations", "2", "--run-dir", tmp_path / "again")
    assert result.returncode == 0 and warm.marker() in result.stdout, result.stderr
