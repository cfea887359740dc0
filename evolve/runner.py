"""The warm runner: a process ``evolve ray start`` leaves beside its Ray, with evolve, Ray, PyArrow and the LLM client
imported, joined to that Ray, its own sandbox fork server and one Ray worker per CPU warm. ``evolve run`` hands it
the whole command (``evolve.launch``) instead of starting a driver of its own.

Why: a driver's start is mostly imports (the ``openai`` package alone takes 0.9 s here, Ray 0.5-0.7 s, PyArrow and
evolve 0.5 s) and a new Ray job starts new workers (~1.2 s of CPU each), which a short run cannot hide: measured on
the peer benchmark's 200 iterations, 6.1-6.9 s as a new driver against 2.8-3.1 s in a warm one.

A run in the runner is the same command: the same code path (``evolve.cli``), its output on the caller's terminal
(the caller's standard streams are passed over the socket), in the caller's working directory and environment, and
the caller exits with the run's exit status. Ctrl-C, SIGTERM and SIGHUP of the caller stop the run as Ctrl-C stops
any run; if the caller dies (SIGKILL), the run is stopped the same way (and, if it has not ended
``ORPHAN_GRACE`` seconds later, the runner exits at once: the archive keeps every finished evaluation either way).

The runner refuses a run, which then starts its own driver as without a runner, when: the caller is another user
or another Python; evolve's code changed since the runner started (it then exits); a process-wide environment
variable (``RAY_*``, ``PYTHON*``, ``EVOLVE_*``, locale, ``HOME``...) differs from the runner's, since modules read
those when imported; another run is in it; its Ray is gone (it then exits). One run at a time.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evolve.launch import HEADER, RUNNER_ENV, RUNNER_SOCKET

RECORD_FILE = "evolve-runner.json"
LOG_FILE = "evolve-runner.log"
READY_TIMEOUT = 120.0  # seconds for the runner to import, join Ray and warm its workers on a loaded machine
ORPHAN_GRACE = 15.0  # seconds a run whose caller died may take to stop before the runner exits
MAX_RSS = 2 << 30  # bytes: past this after a run, the runner exits (later runs start their own drivers)
_PROCESS_WIDE_PREFIXES = ("RAY_", "PYTHON", "EVOLVE_", "LD_", "OMP_", "OPENBLAS_", "MKL_", "CUDA_", "NUMBA_", "XDG_",
                          "LC_", "GRPC_")
_PROCESS_WIDE = frozenset({"LANG", "LANGUAGE", "HOME", "VIRTUAL_ENV", "TMPDIR", "USER"})
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
        try:
            args = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"evolve.runner" in args

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


# ---------------------------------------------------------------------------------------------------------------
# evolve ray start / stop / status


def start_runner(cluster: Any, timeout: float = READY_TIMEOUT) -> RunnerRecord:
    """Start the runner of ``cluster`` (a ``LocalCluster`` just started) and wait until it listens; raise
    ``RuntimeError`` with its log's tail if it does not."""
    import subprocess

    from evolve.ray_local import state_path

    temp_dir = Path(cluster.temp_dir)
    sock, log_path = temp_dir / RUNNER_SOCKET, temp_dir / LOG_FILE
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "evolve.runner", str(state_path())],
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
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while record.alive() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(record.pid, os.WNOHANG)
            time.sleep(0.05)
        if record.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
    for name in (RECORD_FILE, RUNNER_SOCKET):
        with contextlib.suppress(OSError):
            (Path(temp_dir) / name).unlink()
    return record


# ---------------------------------------------------------------------------------------------------------------
# The runner process


@dataclass
class _Request:
    conn: socket.socket
    fds: list[int]
    argv: list[str]
    cwd: str
    env: dict[str, str]


class Runner:
    """Serves runs on a unix socket, one at a time, in its main thread (where Python delivers Ctrl-C)."""

    def __init__(self, state: Path):
        from evolve.ray_local import read_cluster

        self.environ = dict(os.environ)  # before joining Ray sets anything
        cluster = read_cluster(state)
        if cluster is None:
            raise SystemExit(f"evolve runner: no local Ray recorded in {state}")
        self.cluster = cluster
        self.socket_path = Path(cluster.temp_dir) / RUNNER_SOCKET
        self.requests: queue.Queue[_Request] = queue.Queue()
        self.slot = threading.Lock()  # held from a run's admission to its end
        self.running = False
        self.running_lock = threading.Lock()
        self.stopping = False
        self.fingerprint: dict[str, tuple[int, int]] = {}

    def warm_up(self) -> None:
        """Import what a run imports, join the recorded Ray and warm this process's sandbox and a worker per CPU."""
        from evolve.ray_local import TargetKind, choose_target, init_kwargs, prepare_environment

        target = choose_target(None)
        if target.kind is not TargetKind.EVOLVE:
            raise SystemExit(f"evolve runner: the local Ray of `evolve ray start` is not running ({target.note})")
        prepare_environment(target)
        import importlib

        from evolve.startup import LOOP_MODULES

        for name in ("evolve.cli", "evolve.run_setup", "evolve.mutators", "evolve.mutators.llm",
                     "evolve.mutators.tune", "evolve.mutators.scripted", "evolve.cluster", *LOOP_MODULES):
            importlib.import_module(name)  # what a run imports (the llm mutator: the openai package)
        import ray

        ray.init(**init_kwargs(target, None))
        from evolve.sandbox import SandboxConfig, host_probe
        from evolve.startup import _warm_worker

        host_probe(SandboxConfig())
        preload = SandboxConfig().preload
        task = ray.remote(_warm_worker).options(num_cpus=1, scheduling_strategy="SPREAD", max_retries=0)
        ray.get([task.remote(preload) for _ in range(max(1, self.cluster.num_cpus))], timeout=READY_TIMEOUT)
        self.fingerprint = code_fingerprint()

    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = self.socket_path.with_name(self.socket_path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        listener.bind(str(staging))
        os.chmod(staging, 0o600)
        listener.listen(16)
        os.replace(staging, self.socket_path)  # the socket appears once it answers: `evolve ray start` waits for it
        signal.signal(signal.SIGTERM, self._terminate)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a run's interrupt is a KeyboardInterrupt
        threading.Thread(target=self._accept, args=(listener,), name="evolve-runner-accept", daemon=True).start()
        print(f"evolve runner {os.getpid()}: ready on {self.socket_path}", flush=True)
        try:
            while not self.stopping:
                try:
                    request = self.requests.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    self._serve(request)
                finally:
                    self.slot.release()
                if self._should_retire():
                    break
        finally:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            print(f"evolve runner {os.getpid()}: exiting", flush=True)

    def _terminate(self, _signum: int, _frame: Any) -> None:
        self.stopping = True
        with self.running_lock:
            running = self.running
        if running:
            raise KeyboardInterrupt  # the run stops as on Ctrl-C; the loop then ends

    def _should_retire(self) -> bool:
        rss = _rss()
        if rss > MAX_RSS:
            print(f"evolve runner: {rss >> 20} MiB resident after a run; exiting (runs start their own drivers)")
            return True
        if code_fingerprint() != self.fingerprint:
            print("evolve runner: evolve's code changed; exiting")
            return True
        return False

    # -- admission (the accepting thread) ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                self._admit(conn)
            except Exception as exc:  # noqa: BLE001 - a bad request never ends the runner
                print(f"evolve runner: request dropped: {exc}", flush=True)
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        data, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, 3)
        for fd in fds:
            os.set_inheritable(fd, False)
        try:
            if uid != os.getuid():
                raise _Refused("another user's run")
            if len(data) != HEADER.size or len(fds) != 3:
                raise _Refused("an incomplete request")
            body = _read_exactly(conn, HEADER.unpack(data)[0])
            message = json.loads(body)
            reason = self._refusal(message)
            if reason:
                raise _Refused(reason)
            if not self.slot.acquire(blocking=False):
                raise _Refused("another run is in it")
        except _Refused as refused:
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"refused": str(refused)}).encode() + b"\n")
            conn.close()
            return
        conn.settimeout(None)
        self.requests.put(_Request(conn, list(fds), list(message["argv"]), str(message["cwd"]),
                                   dict(message["env"])))

    def _refusal(self, message: dict[str, Any]) -> str:
        from evolve.ray_local import is_running

        if self.stopping:
            return "it is stopping"
        if not is_running(self.cluster):
            self._stop_soon()
            return "its Ray is gone"
        with contextlib.suppress(OSError):
            if not os.path.samefile(str(message.get("python", "")), sys.executable):
                return f"it runs {sys.executable}"
        differ = process_wide_difference(self.environ, dict(message.get("env") or {}))
        if differ:
            return "these environment variables differ from its own: " + ", ".join(differ)
        if code_fingerprint() != self.fingerprint:
            self._stop_soon()
            return "evolve's code changed since it started; it exits"
        return ""

    def _stop_soon(self) -> None:
        self.stopping = True

    # -- a run (the main thread) ---------------------------------------------------------------------------------

    def _serve(self, request: _Request) -> None:
        conn = request.conn
        try:
            conn.sendall(b'{"accepted": true}\n')
        except OSError:
            for fd in request.fds:
                os.close(fd)
            conn.close()
            return
        done = threading.Event()
        threading.Thread(target=self._watch, args=(conn, done), name="evolve-runner-watch", daemon=True).start()
        code = self._execute(request)
        done.set()
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        conn.close()

    def _watch(self, conn: socket.socket, done: threading.Event) -> None:
        """The caller's forwarded signals, and its end: each stops the run as Ctrl-C does."""
        for line in conn.makefile("rb"):
            if done.is_set():
                return
            with contextlib.suppress(ValueError):
                if "signal" in json.loads(line):
                    self._interrupt()
        if done.is_set():
            return
        self._interrupt()  # the caller is gone
        if not done.wait(ORPHAN_GRACE):
            print("evolve runner: a run whose caller died did not stop in time; exiting", flush=True)
            os._exit(1)

    def _interrupt(self) -> None:
        with self.running_lock:
            if self.running:
                _thread.interrupt_main(signal.SIGINT)

    def _execute(self, request: _Request) -> int:
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        saved_streams = sys.stdin, sys.stdout, sys.stderr
        streams = _streams(request.fds)
        code = 1
        try:
            os.environ.clear()
            os.environ.update(request.env)
            os.environ[RUNNER_ENV] = str(os.getpid())
            sys.stdin, sys.stdout, sys.stderr = streams
            os.chdir(request.cwd)
            with self.running_lock:
                self.running = True
                signal.signal(signal.SIGINT, signal.default_int_handler)
            code = _invoke(request.argv)
        except OSError as exc:  # the caller's working directory is gone
            print(f"error: {exc}", file=sys.stderr)
        finally:
            with self.running_lock:
                self.running = False
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt still pending is dropped
            for stream in streams:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            for stream in streams:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        return code


class _Refused(Exception):
    pass


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    if size > 64 << 20:
        raise _Refused("an oversized request")
    parts, left = [], size
    while left:
        part = conn.recv(min(left, 1 << 16))
        if not part:
            raise _Refused("an incomplete request")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _streams(fds: list[int]) -> tuple[Any, Any, Any]:
    """The caller's standard streams, buffered as Python buffers its own: line by line on a terminal."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    stdin = open(fds[0], encoding=encoding, errors="strict")  # noqa: SIM115 - closed after the run
    stdout = open(fds[1], "w", encoding=encoding, errors="strict",  # noqa: SIM115
                  buffering=1 if os.isatty(fds[1]) else -1)
    stderr = open(fds[2], "w", encoding=encoding, errors="backslashreplace", buffering=1)  # noqa: SIM115
    return stdin, stdout, stderr


def _invoke(argv: list[str]) -> int:
    from evolve.cli import main

    try:
        main.main(args=argv, prog_name="evolve", standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:  # noqa: BLE001 - what an uncaught error prints, then the next run
        traceback.print_exc()
        return 1
    return 0


def _rss() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def main(argv: list[str]) -> None:
    os.chdir("/")  # between runs: never keep a user's directory busy
    runner = Runner(Path(argv[0]))
    runner.warm_up()
    runner.serve()
    sys.stdout.flush()
    os._exit(0)  # Ray's exit hooks would wait for a cluster that may be stopping


if __name__ == "__main__":
    main(sys.argv[1:])
