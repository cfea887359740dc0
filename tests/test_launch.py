"""The `evolve` entry point's choice between the warm runner and a run here (`evolve/launch.py`); the runner itself,
end to end, is in tests/test_runner.py."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from evolve.launch import RUNNER_SOCKET, hand_to_runner, runner_socket, wants_runner
from evolve.ray_local import LocalCluster


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["run", "problems/x"], {}, True),
    (["run", "problems/x", "--iterations", "5", "--quiet"], {}, True),
    (["archive", "top", "run"], {}, False),
    (["eval", "problems/x", "p.py"], {}, False),
    ([], {}, False),
    (["run", "problems/x", "--address", "local"], {}, False),
    (["run", "problems/x", "--address=10.0.0.1:6379"], {}, False),
    (["run", "problems/x", "--verbose"], {}, False),
    (["run", "problems/x", "--dashboard"], {}, False),
    (["run", "problems/x", "--num-cpus", "2"], {}, False),
    (["run", "--help"], {}, False),
    (["run", "problems/x"], {"EVOLVE_NO_RUNNER": "1"}, False),
    (["run", "problems/x"], {"RAY_ADDRESS": "10.0.0.1:6379"}, False),
    (["run", "problems/x"], {"EVOLVE_RUNNER": "123"}, False),  # already in a runner: never hand on again
])
def test_only_plain_runs_go_to_the_runner(args: list[str], env: dict[str, str], expected: bool) -> None:
    assert wants_runner(args, env) is expected


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recorded `evolve ray start` with a temp dir of its own (short: unix socket paths are limited)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="evolve-test-", dir="/tmp"))
    state = tmp_path / "local-ray.json"
    cluster = LocalCluster(pid=1, address="10.0.0.1:6390", temp_dir=str(temp_dir), python=sys.executable,
                           num_cpus=2, started_at=time.time())
    state.write_text(json.dumps(cluster.to_dict()))
    monkeypatch.setenv("EVOLVE_RAY_STATE", str(state))
    for name in ("EVOLVE_NO_RUNNER", "RAY_ADDRESS", "EVOLVE_RUNNER"):
        monkeypatch.delenv(name, raising=False)
    yield temp_dir
    for path in temp_dir.iterdir():
        path.unlink()
    temp_dir.rmdir()


def test_without_a_record_or_a_live_socket_the_command_runs_here(recorded: Path, monkeypatch) -> None:
    assert runner_socket() == recorded / RUNNER_SOCKET
    assert hand_to_runner(["run", "problems/x"]) is None  # no socket
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(recorded / RUNNER_SOCKET))  # a socket file nobody listens on (a runner killed)
    dead.close()
    assert hand_to_runner(["run", "problems/x"]) is None
    monkeypatch.setenv("EVOLVE_RAY_STATE", str(recorded / "missing.json"))
    assert runner_socket() is None and hand_to_runner(["run", "problems/x"]) is None


def serve_once(path: Path, replies: list[bytes]) -> dict[str, object]:
    """A stand-in runner: takes one request (three descriptors and the JSON), answers ``replies``, hangs up."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        data, fds, _flags, _addr = socket.recv_fds(conn, 8, 3)
        size = int.from_bytes(data, "big")
        body = b""
        while len(body) < size:
            body += conn.recv(size - len(body))
        seen.update(json.loads(body), fds=len(fds))
        for fd in fds:
            os.close(fd)
        for reply in replies:
            conn.sendall(reply)
        conn.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    seen["thread"] = thread
    return seen


def test_the_runner_gets_the_command_streams_and_environment_and_its_exit_status_is_the_commands(
        recorded: Path, monkeypatch) -> None:
    monkeypatch.setenv("EVOLVE_TEST_MARK", "kept")
    seen = serve_once(recorded / RUNNER_SOCKET, [b'{"accepted": true}\n', b'{"exit": 7}\n'])
    assert hand_to_runner(["run", "problems/x", "--quiet"]) == 7
    seen["thread"].join(10)
    assert seen["argv"] == ["run", "problems/x", "--quiet"] and seen["fds"] == 3
    assert seen["env"]["EVOLVE_TEST_MARK"] == "kept" and seen["cwd"] == str(Path.cwd())


def test_a_refusal_is_said_and_the_command_runs_here(recorded: Path, capsys) -> None:
    serve_once(recorded / RUNNER_SOCKET, [b'{"refused": "another run is in it"}\n'])
    assert hand_to_runner(["run", "problems/x"]) is None
    assert "another run is in it" in capsys.readouterr().err


def test_a_runner_that_dies_during_the_run_is_an_error_that_points_at_resume(recorded: Path, capsys) -> None:
    serve_once(recorded / RUNNER_SOCKET, [b'{"accepted": true}\n'])  # then hangs up without an exit status
    assert hand_to_runner(["run", "problems/x"]) == 1
    err = capsys.readouterr().err
    assert "ended during the run" in err and "--resume" in err
