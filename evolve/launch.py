"""The ``evolve`` command's entry point: an ``evolve run`` goes to the warm runner of ``evolve ray start`` when one
is up (``evolve.runner``); everything else, and every run the runner does not take, runs in this process.

Only the standard library is imported before that choice: the point of the runner is that this process never
imports Ray, PyArrow or the LLM client (2-3 s of a short run). The runner gets this terminal's standard streams,
its working directory and environment; this process forwards Ctrl-C and termination signals to it and exits with
the run's exit status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

RUNNER_SOCKET = "evolve-runner.sock"  # in the temp dir of the Ray `evolve ray start` recorded
NO_RUNNER_ENV = "EVOLVE_NO_RUNNER"  # set (non-empty): every run starts its own driver
RUNNER_ENV = "EVOLVE_RUNNER"  # set by the runner in a run's environment: the runner's pid
# Runs these options shape are not the runner's: another Ray, Ray's own messages, a private instance.
_OWN_DRIVER_OPTIONS = ("--address", "--verbose", "--dashboard", "--num-cpus", "--help", "-h")
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
HEADER = struct.Struct("!Q")  # the request's JSON length, sent with the three descriptors
ANSWER_TIMEOUT = 10.0  # seconds for the runner to take or refuse a run (it answers at once unless wedged)


def entry() -> None:
    """The ``evolve`` command."""
    code = hand_to_runner(sys.argv[1:])
    if code is not None:
        sys.stdout.flush()
        os._exit(code)
    from evolve.cli import entry as here

    here()


def wants_runner(args: list[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether ``evolve ARGS`` is a run the warm runner may take (it may still refuse it)."""
    if args[:1] != ["run"] or environ.get(NO_RUNNER_ENV) or environ.get("RAY_ADDRESS") or environ.get(RUNNER_ENV):
        return False
    return not any(arg == option or arg.startswith(option + "=") for arg in args[1:] for option in _OWN_DRIVER_OPTIONS)


def runner_socket() -> Path | None:
    """Where the runner of the recorded ``evolve ray start`` listens; None without a record."""
    from evolve.ray_local import read_cluster

    cluster = read_cluster()
    return Path(cluster.temp_dir) / RUNNER_SOCKET if cluster is not None else None


def hand_to_runner(args: list[str]) -> int | None:
    """Run ``evolve ARGS`` in the warm runner and return its exit status; None when it is not the runner's (no
    runner, another kind of command, or the runner refused it, which it says on stderr)."""
    if not wants_runner(args):
        return None
    path = runner_socket()
    if path is None or not path.exists():
        return None
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return None  # a closed standard stream: nothing to hand over
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ANSWER_TIMEOUT)
    try:
        sock.connect(str(path))
        if not peer_is_me(sock):
            sock.close()
            return None  # never hand this terminal and environment (API keys) to another user's process
        env = dict(os.environ)
        with contextlib.suppress(OSError):  # the runner's own streams are not this terminal: it gets its size
            size = os.get_terminal_size(1)
            env.setdefault("COLUMNS", str(size.columns))
            env.setdefault("LINES", str(size.lines))
        request = json.dumps({"argv": args, "cwd": os.getcwd(), "env": env, "python": sys.executable}).encode()
        socket.send_fds(sock, [HEADER.pack(len(request))], [0, 1, 2])
        sock.sendall(request)
        replies = sock.makefile("rb")
        first = _message(replies.readline())
    except OSError:
        sock.close()
        return None  # a runner gone since its socket was made, or not answering: this process runs the command
    sock.settimeout(None)
    if not first.get("accepted"):
        reason = first.get("refused") or "it did not answer"
        print(f"note: the warm runner of `evolve ray start` did not take this run ({reason}); it runs here",
              file=sys.stderr)
        sock.close()
        return None
    return _wait(sock, replies)


def peer_is_me(sock: socket.socket) -> bool:
    """Whether the process at the other end of a connected unix socket runs as this user."""
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    except OSError:
        return False
    return uid == os.getuid()


def _message(line: bytes) -> dict[str, object]:
    try:
        value = json.loads(line) if line else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _wait(sock: socket.socket, replies: object) -> int:
    """Forward signals until the runner says how the run ended. After a termination signal (SIGTERM, SIGHUP,
    SIGQUIT) has stopped the run, this process ends by that signal, as a run of its own would have."""
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(OSError):  # the runner is gone: the read below says so
            sock.sendall(json.dumps({"signal": signum}).encode() + b"\n")

    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED}
    code: int | None = None
    try:
        for line in replies:  # type: ignore[attr-defined]
            message = _message(line)
            if "exit" in message:
                code = message["exit"] if isinstance(message["exit"], int) else 1
                break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
    ending = [signum for signum in received if signum != signal.SIGINT]
    if code is not None and ending:
        sys.stdout.flush()
        signal.signal(ending[0], signal.SIG_DFL)
        os.kill(os.getpid(), ending[0])
    if code is not None:
        return code
    print("error: the warm runner of `evolve ray start` ended during the run; every finished evaluation is in the "
          "archive (continue with --resume, or `evolve ray stop` and `evolve ray start` for a new runner)",
          file=sys.stderr)
    return 1
