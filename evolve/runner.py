"""The warm runner of ``evolve ray start``: what it is, when it takes a run, and starting, stopping and asking it.

The runner (``evolve.runner_process``) is a process ``evolve ray start`` leaves beside its Ray, with evolve, Ray,
PyArrow and the LLM client imported, joined to that Ray, its own sandbox fork server and one Ray worker per CPU
warm. ``evolve run`` hands it the whole command (``evolve.launch``) instead of starting a driver of its own.

Why: a driver's start is mostly imports (the ``openai`` package alone takes 0.9 s here, Ray 0.5-0.7 s, PyArrow and
evolve 0.5 s) and a new Ray job starts new workers (~1.2 s of CPU each), which a short run cannot hide: 200
iterations of the peer benchmark take ~6 s as a new driver and ~3 s in the runner (``bench/README.md``).

A run in the runner is the same command: the same code path (``evolve.cli``), its output on the caller's terminal
(the caller's standard streams are passed over the socket), in the caller's working directory and environment; the
caller exits with the run's exit status. Ctrl-C of the caller stops the run as Ctrl-C stops any run; SIGTERM,
SIGHUP and SIGQUIT stop it the same way, after which the caller ends by that signal; if the caller dies (SIGKILL),
the run is stopped too (and if it has not ended ``ORPHAN_GRACE`` seconds later, the runner exits at once: the
archive keeps every finished evaluation either way). Evaluations a stopped run leaves in flight are waited for
before the runner takes another run (a driver's would end with its Ray job).

The runner refuses a run, which then starts its own driver as without a runner, when: the socket's peer is another
user; the caller runs another Python; evolve's code changed since the runner started (it then exits); a
process-wide environment variable (``RAY_*``, ``PYTHON*``, ``EVOLVE_*``, locale, ``HOME``...: modules read those
when imported) differs from the runner's; another run is in it or its evaluations are still finishing; its Ray is
gone (it then exits). One run at a time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evolve.launch import HEADER, RUNNER_SOCKET, peer_is_me

RECORD_FILE = "evolve-runner.json"
LOG_FILE = "evolve-runner.log"
READY_TIMEOUT = 120.0  # seconds for the runner to import, join Ray and warm its workers on a loaded machine
_PROCESS_WIDE_PREFIXES = ("RAY_", "PYTHON", "EVOLVE_", "LD_", "OMP_", "OPENBLAS_", "MKL_", "CUDA_", "NUMBA_", "GRPC_")
_PROCESS_WIDE = frozenset({"LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "HOME", "VIRTUAL_ENV", "TMPDIR", "USER",
                           "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                           "SSL_CERT_FILE", "SSL_CERT_DIR"})  # the LLM clients' TLS context is built once
_IMPLIED = {"RAY_CLIENT_MODE": "0"}  # what importing Ray sets when unset (`evolve ray start` passes it on)


@dataclass(frozen=True)
class RunnerRecord:
    """What ``evolve ray start`` recorded about its runner (``RECORD_FILE`` in the Ray's temp dir)."""

    pid: int
    socket: str
    log: str
    started_at: float

    @classmethod
    def read(cls, temp_dir: str | Path) -> RunnerRecord | None:
        try:
            data = json.loads((Path(temp_dir) / RECORD_FILE).read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def alive(self) -> bool:
        """The recorded process runs and is still a runner (pids are reused)."""
        from evolve.ray_local import _cmdline

        return "evolve.runner_process" in _cmdline(self.pid)

    def ready(self) -> bool:
        return self.alive() and Path(self.socket).exists()


def code_fingerprint(roots: tuple[Path, ...] | None = None) -> dict[str, tuple[int, int]]:
    """Modification time and size of every Python file under ``roots`` (default: the evolve and evaluators
    packages, installed or editable)."""
    if roots is None:
        import evaluators
        import evolve

        roots = tuple(Path(package.__file__ or "").parent for package in (evolve, evaluators))
    files: dict[str, tuple[int, int]] = {}
    for root in roots:
        for path in root.rglob("*.py"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                files[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return files


def process_wide_difference(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """Environment variables read when modules are imported (so not changeable per run) that differ."""
    keys = {k for k in (*mine, *theirs) if k.startswith(_PROCESS_WIDE_PREFIXES) or k in _PROCESS_WIDE}
    return sorted(k for k in keys if mine.get(k, _IMPLIED.get(k)) != theirs.get(k, _IMPLIED.get(k)))


def start_runner(cluster: Any, timeout: float = READY_TIMEOUT) -> RunnerRecord:
    """Start the runner of ``cluster`` (a running ``LocalCluster``) and wait until it listens; raise
    ``RuntimeError`` with its log's tail if it does not."""
    import subprocess

    from evolve.ray_local import state_path

    temp_dir = Path(cluster.temp_dir)
    sock, log_path = temp_dir / RUNNER_SOCKET, temp_dir / LOG_FILE
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "evolve.runner_process", str(state_path())],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # outlives this command, like the Ray it serves
    record = RunnerRecord(pid=process.pid, socket=str(sock), log=str(log_path), started_at=time.time())
    (temp_dir / RECORD_FILE).write_text(json.dumps(asdict(record)))
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_runner(temp_dir)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
            raise RuntimeError(f"the warm runner did not start (log {log_path}):\n{tail}")
        time.sleep(0.05)
    return record


def stop_runner(temp_dir: str | Path, timeout: float = 30.0) -> RunnerRecord | None:
    """Stop the runner recorded in ``temp_dir`` (a run in it is stopped as by Ctrl-C first); forget the record."""
    record = RunnerRecord.read(temp_dir)
    if record is None:
        return None
    if record.alive():
        from evolve.ray_local import _terminate

        _terminate(record.pid, timeout)  # SIGTERM, SIGKILL after ``timeout``, as for the Ray head
    for name in (RECORD_FILE, RUNNER_SOCKET):
        with contextlib.suppress(OSError):
            (Path(temp_dir) / name).unlink()
    return record


def runner_status(temp_dir: str | Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """What the runner of ``temp_dir`` says of itself (pid, busy, runs served); None when none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(Path(temp_dir) / RUNNER_SOCKET))
        if not peer_is_me(sock):
            return None
        query = json.dumps({"query": "status"}).encode()
        socket.send_fds(sock, [HEADER.pack(len(query))], [])
        sock.sendall(query)
        reply = json.loads(sock.makefile("rb").readline() or b"null")
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    return reply if isinstance(reply, dict) else None
