"""The warm launcher: a single-threaded server process that forks every sandboxed process.

The trusted process (often a multi-threaded Ray worker) starts one server per process with a clean environment, so
the server's memory, which every candidate inherits, never held a secret. The server imports the Python harness and
the ``preload`` modules once, probes the host's layers, then forks a monitor per request (see ``trampoline``).
Requests travel over a ``SOCK_SEQPACKET`` socket pair, with the child's descriptors attached (``SCM_RIGHTS``); each
request carries its own status socket on which the monitor reports ``ready``/``exit`` and receives ``kill``. When
the trusted process dies, the socket closes, the server kills every monitor, and each monitor's death takes its
namespace with it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.sandbox.policy import SpawnSpec, thread_env
from evolve.sandbox.probe import HostProbe
from evolve.sandbox.syscalls import readable

HARNESS_PATH = Path(__file__).resolve().parents[2] / "evaluators" / "python_harness.py"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
SERVER_ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
MAX_MESSAGE = 1 << 20


class ForkServerError(RuntimeError):
    """The fork server could not start or stopped answering (a host problem, not the candidate's fault)."""


@dataclass(frozen=True)
class Hello:
    pid: int
    probe: HostProbe
    threads: int
    preloaded: tuple[str, ...]
    preload_errors: dict[str, str]

    @property
    def warm_ok(self) -> bool:
        return self.threads == 1


# ----------------------------------------------------------------------------------------------- server side


def serve() -> None:
    """Entry point of the server process: ``argv = [-c, control_fd, json_options]``."""
    control_fd, options = int(sys.argv[1]), json.loads(sys.argv[2])
    from evolve.sandbox import syscalls, trampoline
    from evolve.sandbox.probe import probe_host

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trusted side decides when the server stops
    os.set_inheritable(control_fd, False)  # inherited through pass_fds; spawned inits must not hold it
    control = socket.socket(fileno=control_fd)
    trampoline.register_server_paths(options.get("server_paths", []))
    spec = importlib.util.spec_from_file_location(trampoline.HARNESS_MODULE, options["harness"])
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    sys.modules[trampoline.HARNESS_MODULE] = harness
    spec.loader.exec_module(harness)
    preloaded, errors = [], {}
    for name in options.get("preload", []):
        try:
            importlib.import_module(name)
            preloaded.append(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional module only costs speed
            errors[name] = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(OSError):  # orphans of a crashed monitor come back here and are reaped
        syscalls.set_child_subreaper()
    probe = probe_host()
    trampoline.prepare()
    gc.collect()
    gc.freeze()  # children never scan (so never copy-on-write) the server's objects when they collect garbage
    threads = len(os.listdir("/proc/self/task"))
    hello = {"pid": os.getpid(), "probe": probe.to_dict(), "threads": threads, "preloaded": preloaded,
             "preload_errors": errors}
    control.send(json.dumps(hello).encode())
    sys.stdout.flush()
    sys.stderr.flush()

    _Server(control).loop()


@dataclass
class _Direct:
    """A candidate the server forked itself into a fresh PID namespace whose init only waits (``tinyinit``)."""

    status: socket.socket
    err_r: int
    init_pid: int
    setup_error: bytes = b""
    killed: bool = False
    watching_status: bool = True
    raw: int | None = None  # the candidate's wait status
    reaped: bool = False
    init_reaped: bool = False
    cpu: float = 0.0  # user + system seconds wait4 reported for the candidate and the init (and what they reaped)


class _Server:
    """The request loop: fork candidates (directly, or through a monitor), watch them, reap them."""

    def __init__(self, control: socket.socket):
        from evolve.sandbox import syscalls, tinyinit

        self.control = control
        self.me = os.getpid()
        self.root = os.geteuid() == 0
        self.direct: dict[int, _Direct] = {}
        self.inits: dict[int, int] = {}  # init pid -> candidate pid
        self.monitors: set[int] = set()
        self.scratch: dict[str, list[int]] = {}  # scratch dirs in use (removed here if the trusted side dies): leases
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # Nobody ever writes the lifeline: its read end hits EOF exactly when this process is gone. It is the stdin
        # of every namespace's init (which then exits, taking the namespace with it) and lets a freshly forked
        # candidate notice a server that died before the death signal was armed.
        self.lifeline_r, self.lifeline_w = os.pipe2(os.O_CLOEXEC)
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        cat = shutil.which("cat", path="/usr/bin:/bin")
        self.init_argv = tinyinit.init_argv() or ([cat] if cat else None)  # see tinyinit: 0.05 ms against 1.4 ms
        self.syscalls = syscalls

    def loop(self) -> None:
        while True:
            watched = [self.control, self.wake_r]
            for child in self.direct.values():
                watched += [child.err_r] if child.err_r >= 0 else []
                watched += [child.status] if child.watching_status else []
            ready = readable(watched, None)
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 4096):
                        pass
                self._reap()
            for child in list(self.direct.values()):
                if child.err_r >= 0 and child.err_r in ready:
                    self._read_setup(child)
                if child.watching_status and child.status in ready:
                    self._status_message(child)
            if self.control in ready and not self._request():
                break
        self._shutdown()

    def _request(self) -> bool:
        try:
            message, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 8)
        except OSError:
            message, fds = b"", []
        for fd in fds:
            os.set_inheritable(fd, False)  # an exec'd init must not hold the candidate's pipes open
        if not message:
            return False
        request = json.loads(message)
        if request.get("op") in ("track", "untrack"):
            # A tracked scratch dir comes with its candidate's lease descriptors: holding them here keeps the uid and
            # cores leased until this server has killed the candidate's processes, even if the trusted side dies.
            path = str(request["path"])
            for fd in self.scratch.pop(path, []):
                os.close(fd)
            if request["op"] == "track":
                self.scratch[path] = fds
            return True
        if request.get("op") != "spawn" or len(fds) < 4:
            for fd in fds:
                os.close(fd)
            return True
        from evolve.sandbox import trampoline

        status = socket.socket(fileno=fds[0])
        child_fds = trampoline.ChildFds(fds[1], fds[2], fds[3], fds[4] if len(fds) > 4 else -1)
        spec = SpawnSpec.from_dict(request["spec"])
        try:
            if trampoline.uses_monitor(spec) or not self.root or self.init_argv is None:
                self._fork_monitor(spec, child_fds, status)
            else:
                self._fork_direct(spec, child_fds, status)
                status = None  # kept open in self.direct
        except OSError as exc:
            with contextlib.suppress(OSError):
                status.send(json.dumps({"event": "exit", "error": f"fork server: {exc}", "returncode": None,
                                        "signal": None, "killed": False}).encode())
        if status is not None:
            status.close()
        for fd in fds[1:]:
            os.close(fd)
        return True

    def _fork_monitor(self, spec: SpawnSpec, fds: Any, status: socket.socket) -> int:
        from evolve.sandbox import trampoline

        pid = os.fork()
        if pid == 0:
            trampoline.run_monitor(spec, fds, status, self.me)
        self.monitors.add(pid)
        return pid

    def _fork_direct(self, spec: SpawnSpec, fds: Any, status: socket.socket) -> int:
        """New PID namespace: a tiny init (``tinyinit``, or ``cat``; spawned, not forked: no copy of this process)
        reading the lifeline is its PID 1, the candidate (forked from this warm process) its PID 2. The namespace,
        daemons included, dies when the init is killed."""
        from evolve.sandbox import trampoline

        assert self.init_argv is not None
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        init, pid = -1, -1
        try:
            self.syscalls.unshare(self.syscalls.CLONE_NEWPID)  # our next children go into the new namespace
            try:
                init = os.posix_spawn(self.init_argv[0], self.init_argv, {}, file_actions=[
                    (os.POSIX_SPAWN_DUP2, self.lifeline_r, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ], setsid=True, setsigdef=(signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD))
                pid = os.fork()
            finally:
                if os.getpid() == self.me:
                    self.syscalls.setns(self.own_pidns, self.syscalls.CLONE_NEWPID)
        except OSError:
            os.close(err_r)
            os.close(err_w)
            if init > 0:
                os.kill(init, signal.SIGKILL)
            raise
        if pid == 0:
            trampoline.run_direct(spec, fds, err_w, self.lifeline_r)
        os.close(err_w)
        self.direct[pid] = _Direct(status, err_r, init)
        self.inits[init] = pid
        with contextlib.suppress(OSError):
            status.send(json.dumps({"event": "spawned", "pids": [init, pid]}).encode())
        return pid

    def _read_setup(self, child: _Direct) -> None:
        data = os.read(child.err_r, 65536)
        child.setup_error += data
        if not data:
            os.close(child.err_r)
            child.err_r = -1
            if not child.setup_error:
                with contextlib.suppress(OSError):
                    child.status.send(b'{"event": "ready"}')

    def _status_message(self, child: _Direct) -> None:
        try:
            message = child.status.recv(4096)
        except OSError:
            message = b""
        if not message or message.startswith(b"kill"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.init_pid, signal.SIGKILL)  # the init's death empties the whole namespace
            child.killed = True
        if not message:
            child.watching_status = False

    def _reap(self) -> None:
        while True:
            try:
                pid, raw, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid <= 0:
                return
            self.monitors.discard(pid)
            cpu = usage.ru_utime + usage.ru_stime  # includes every descendant the process waited for
            if pid in self.direct:
                child = self.direct[pid]
                child.raw, child.reaped = raw, True
                child.cpu += cpu
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.init_pid, signal.SIGKILL)  # takes the candidate's leftovers (daemons) along
                self._maybe_report(pid)
            elif pid in self.inits:
                candidate = self.inits.pop(pid)
                self.direct[candidate].init_reaped = True
                self.direct[candidate].cpu += cpu  # the orphans the init collected as its namespace died
                self._maybe_report(candidate)

    def _maybe_report(self, pid: int) -> None:
        """Report once both the candidate and its init are reaped: only then is the namespace empty."""
        from evolve.sandbox.trampoline import exit_message

        child = self.direct[pid]
        if not (child.reaped and child.init_reaped):
            return
        del self.direct[pid]
        if child.err_r >= 0:
            with contextlib.suppress(OSError):
                child.setup_error += os.read(child.err_r, 65536)
            os.close(child.err_r)
        with contextlib.suppress(OSError):
            child.status.send(json.dumps(exit_message(child.raw, child.killed,
                                                      child.setup_error.decode("utf-8", "replace"),
                                                      child.cpu)).encode())
        child.status.close()

    def _shutdown(self) -> None:
        from evolve.sandbox.scratch import SCRATCH_PREFIX, remove_tree, unmount_scratch
        from evolve.sandbox.trampoline import sweep_descendants

        for pid in [*self.monitors, *self.direct, *self.inits]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        sweep_descendants()
        # The trusted side died mid-evaluation (a Ray worker killed): nobody else will remove these.
        for path in self.scratch:
            parent = Path(path).parent
            if Path(path).name == "work" and parent.name.startswith(SCRATCH_PREFIX):
                unmount_scratch(Path(path))
                remove_tree(parent)
        os._exit(0)  # the lease descriptors close with us


# ----------------------------------------------------------------------------------------------- client side


def server_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in SERVER_ENV_ALLOWLIST if k in os.environ}
    env.update(PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", HOME="/nonexistent")
    env.update(thread_env())  # BLAS must not start a thread pool in the server: it forks
    return env


class ForkServer:
    """Client handle on this process's fork server. Thread-safe; one per process (see ``get_forkserver``)."""

    def __init__(self, preload: tuple[str, ...] = ("numpy",), start_timeout: float = 120.0):
        self.preload = preload
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        options = {"harness": str(HARNESS_PATH), "preload": list(preload), "server_paths": [PACKAGE_ROOT]}
        boot = ("import sys; sys.path.insert(0, sys.argv.pop(3)); "
                "from evolve.sandbox.forkserver import serve; serve()")
        argv = [sys.executable, "-s", "-P", "-c", boot, str(theirs.fileno()), json.dumps(options), PACKAGE_ROOT]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - read only if the server dies
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr, env=server_env(),
            pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True, cwd="/",
        )
        theirs.close()
        self.sock = ours
        self.owner_pid = os.getpid()
        ready = readable([ours], start_timeout)
        data = ours.recv(MAX_MESSAGE) if ready else b""
        if not data:
            code = self.proc.poll()
            why = f"sent no hello within {start_timeout:.0f} s" if code is None else f"exited with code {code}"
            stderr = self.server_stderr()
            self.close()
            raise ForkServerError(f"the sandbox fork server did not start ({why}): {stderr}")
        raw = json.loads(data)
        self.hello = Hello(pid=raw["pid"], probe=HostProbe.from_dict(raw["probe"]), threads=raw["threads"],
                           preloaded=tuple(raw["preloaded"]), preload_errors=dict(raw["preload_errors"]))

    def server_stderr(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-4000:].decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and os.getpid() == self.owner_pid

    def spawn(self, spec: SpawnSpec, stdin: int, stdout: int, stderr: int, result: int = -1) -> socket.socket:
        """Ask the server to start ``spec``; returns the status socket of the new monitor."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = [theirs.fileno(), stdin, stdout, stderr] + ([result] if result >= 0 else [])
        payload = json.dumps({"op": "spawn", "spec": spec.to_dict()}).encode()
        if len(payload) > MAX_MESSAGE:
            raise ForkServerError("spawn request too large (argv/env over 1 MiB)")
        try:
            with self._lock:
                socket.send_fds(self.sock, [payload], fds)
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"the sandbox fork server is gone: {exc}; {self.server_stderr()}") from None
        finally:
            theirs.close()
        return ours

    def track(self, scratch: Path, in_use: bool = True, lease_fds: list[int] | tuple[int, ...] = ()) -> None:
        """Tell the server about a scratch dir (or that it is gone): if this process dies, the server removes it.
        ``lease_fds``: the candidate's lease locks, which the server holds (duplicates) until the dir is untracked."""
        payload = json.dumps({"op": "track" if in_use else "untrack", "path": str(scratch)}).encode()
        with contextlib.suppress(OSError), self._lock:
            socket.send_fds(self.sock, [payload], list(lease_fds)) if lease_fds else self.sock.send(payload)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


_servers: dict[tuple[int, tuple[str, ...]], ForkServer] = {}
_servers_lock = threading.Lock()


def get_forkserver(preload: tuple[str, ...] = ("numpy",)) -> ForkServer:
    """This process's fork server for ``preload`` (started on first use, restarted if it died)."""
    key = (os.getpid(), tuple(preload))
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive:
            if server is not None and os.getpid() == server.owner_pid:
                server.close()
            server = ForkServer(tuple(preload))
            _servers[key] = server
        return server


def shutdown_forkservers() -> None:
    """Stop this process's fork servers (tests use it to start from a clean server)."""
    with _servers_lock:
        for key, server in list(_servers.items()):
            if key[0] == os.getpid():
                server.close()
            del _servers[key]


def wait_message(sock: socket.socket, deadline: float | None) -> dict[str, Any] | None:
    """Next JSON message from a monitor's status socket; None at the deadline or when the monitor is gone."""
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = readable([sock], timeout)
        if not ready:
            return None
        try:
            data = sock.recv(MAX_MESSAGE)
        except OSError:
            return {"event": "exit", "error": "monitor vanished", "returncode": None, "signal": None, "killed": True}
        if not data:
            return {"event": "exit", "error": "monitor vanished", "returncode": None, "signal": None, "killed": True}
        return json.loads(data)
