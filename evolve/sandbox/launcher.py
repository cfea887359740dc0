"""Launching untrusted processes under every isolation layer the host allows (the trusted side of the sandbox).

``Sandbox`` is what ``Candidate`` and ``run_stage`` use: ``make_scratch``/``remove_scratch`` for the private
directory, ``spawn_python`` for a live harness process speaking JSON lines, ``run`` for any command, and ``level``,
the isolation level every result records. All processes are forked by this process's fork server
(``forkserver``), never with ``preexec_fn`` from this (possibly multi-threaded) process.

The scratch dirs' layout: ``scratch``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from evolve.problem import Limits
from evolve.sandbox import cgroups, leases
from evolve.sandbox.config import Layer, SandboxConfig, format_level
from evolve.sandbox.cputime import CgroupMeter, CpuMeter, ProcMeter
from evolve.sandbox.forkserver import HARNESS_PATH, ForkServer, get_forkserver, wait_message
from evolve.sandbox.layers import choose_layers, missing_layers, unavailable_reason
from evolve.sandbox.policy import (
    PlanInput,
    SpawnError,
    SpawnSpec,
    candidate_env,
    files_for,
    plan_spawn,
)
from evolve.sandbox.scratch import (
    SCRATCH_PREFIX,
    mount_scratch,
    remove_tree,
    sweep_orphaned_scratch,
    unmount_scratch,
)
from evolve.sandbox.syscalls import readable, writable

__all__ = ["BasicSandbox", "ChannelError", "RunResult", "Sandbox", "SandboxProcess", "SandboxSetupError",
           "SandboxUnavailable", "choose_layers", "missing_layers", "sweep_orphaned_scratch", "unavailable_reason"]

if TYPE_CHECKING:  # evolve.channel imports numpy, which the fork server (importing this package) must not need
    from evolve.channel import ReplyLimits

KILL_CONFIRM_TIMEOUT = 10.0
EXIT_GRACE = 0.2  # seconds a harness gets to leave by itself at end of input before its tree is killed
F_SETPIPE_SZ = 1031
IOV_MAX = 1024  # buffers per writev call (the Linux limit)
POLL_INTERVAL = 0.01  # seconds between two looks at a watched budget while a candidate has the turn


class SandboxUnavailable(RuntimeError):
    """The host cannot provide the isolation level that ``sandbox.require`` asks for."""


class SandboxSetupError(RuntimeError):
    """A layer the probe reported as working failed for one process (host problem, never the candidate's fault)."""


@dataclass(frozen=True)
class RunResult:
    """Outcome of one sandboxed command."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    signal: int | None = None  # signal that ended the process, if any
    cpu_seconds: float | None = None  # CPU time of the whole process tree, measured on the trusted side
    cpu_accounting: str = ""  # how: "cgroup" (the kernel's) or "proc" (sampled; see ``cputime``)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class ChannelError(RuntimeError):
    """The candidate process died, timed out or broke the protocol during a request."""

    def __init__(self, kind: str, message: str, stderr: str = "", signal_number: int | None = None):
        super().__init__(message)
        self.kind = kind  # "timeout" | "died" | "protocol"
        self.stderr = stderr
        self.signal_number = signal_number


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


SPAWNED_WAIT = 0.5  # seconds cpu_seconds() waits for the tree's pids when /proc sampling needs them


@dataclass
class _Monitor:
    """The trusted side's view of one sandboxed process: its monitor's status socket and its CPU meter."""

    sock: Any
    meter: CpuMeter = field(default_factory=ProcMeter)
    exit: dict[str, Any] | None = None
    final_cpu: float | None = None  # the meter's figure once the tree is gone
    _closed: bool = False

    def _handle(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "exit":
            self.exit = message
        elif event == "spawned":
            self.meter.spawned([int(pid) for pid in message.get("pids", ())])

    def wait_exit(self, deadline: float | None) -> dict[str, Any] | None:
        while self.exit is None:
            message = wait_message(self.sock, deadline)
            if message is None:
                return None
            self._handle(message)
        return self.exit

    def cpu_seconds(self) -> float:
        """CPU seconds of the whole tree so far; the final figure once the tree is gone."""
        if self.final_cpu is not None:
            return self.final_cpu
        if not self._closed:
            wait_until = time.monotonic() + (SPAWNED_WAIT if self.meter.needs_pids else 0.0)
            while self.exit is None and readable([self.sock], max(0.0, wait_until - time.monotonic())):
                self._handle(wait_message(self.sock, time.monotonic()) or {})
                if not self.meter.needs_pids:
                    wait_until = 0.0
        return self.meter.seconds()

    def kill(self) -> dict[str, Any]:
        """Kill the whole process tree and wait until the monitor confirms nothing is left."""
        if self.exit is None:
            with contextlib.suppress(OSError):
                self.sock.send(b"kill")
            self.wait_exit(time.monotonic() + KILL_CONFIRM_TIMEOUT)
        return self.exit or {"returncode": None, "signal": None, "killed": True, "error": "no confirmation"}

    def setup_error(self) -> str:
        return str((self.exit or {}).get("error") or "")

    def close(self) -> None:
        self.kill()
        # The monitor closes its socket as it exits: after EOF nothing of this process tree is left running.
        deadline = time.monotonic() + 1.0
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and readable([self.sock], deadline - time.monotonic()):
                if not self.sock.recv(65536):
                    break
            self.sock.close()
        self._closed = True
        if self.final_cpu is None:
            self.final_cpu = self.meter.finish(self.exit)


@dataclass
class SandboxProcess:
    """A live sandboxed harness: requests on its stdin, replies on a dedicated pipe (``evolve.channel`` framing).

    Every request carries a fresh random id that the reply must echo, and nothing may arrive on the reply channel
    before a request is sent: a candidate that writes to the channel itself can only do what returning that data
    would do, and cannot queue answers to make a later call look instantaneous. Replies are read within
    ``max_reply`` bytes and parsed within ``ReplyLimits`` (size, depth, count of values) before anything is built.
    """

    monitor: _Monitor
    requests: int  # write end of the harness's stdin (non-blocking: writes wait with the deadline)
    replies: int
    scratch: Path
    stdout_path: Path
    stderr_path: Path
    output_limit: int
    max_reply: int
    _buffer: bytes = field(default=b"")

    def request(self, message: dict[str, Any], deadline: float, limits: ReplyLimits | None = None) \
            -> dict[str, Any]:
        """Send one JSON request and return the reply's header (any payload is read and dropped)."""
        return self.exchange(message, deadline, limits=limits)[0]

    def exchange(self, message: dict[str, Any], deadline: float, payload: Sequence[bytes | bytearray | memoryview] = (), *,
                 limits: ReplyLimits | None = None, poll: Callable[[], None] | None = None) \
            -> tuple[dict[str, Any], bytearray]:
        """Send ``message`` and its binary ``payload`` (buffers written as they are, with ``writev``); return the
        reply's header and payload.

        ``poll`` is called about every ``POLL_INTERVAL`` seconds while the candidate has the turn (a CPU budget
        watched from here); whatever it raises kills the process tree and propagates.
        """
        from evolve.channel import ReplyError, ReplyLimits, parse_header

        limits = limits or ReplyLimits(max_bytes=self.max_reply)
        if self._buffer or readable([self.replies], 0):
            self.kill()
            raise ChannelError("protocol", "unsolicited data on the result channel (forged reply)", self.stderr())
        nonce = secrets.token_hex(16)
        header = {**message, "id": nonce}
        parts = [memoryview(part).cast("B") for part in payload]
        size = sum(len(part) for part in parts)
        if size:
            header["nbytes"] = size
        try:
            self._send([memoryview((json.dumps(header, allow_nan=True) + "\n").encode()), *parts], deadline, poll)
            line = self._read_line(deadline, limits.max_bytes, poll)
            try:
                reply = parse_header(line, limits)
            except ReplyError as exc:
                self.kill()
                raise ChannelError("protocol", str(exc), self.stderr()) from None
            if reply.get("id") != nonce:
                self.kill()
                raise ChannelError("protocol", "reply does not answer this request (forged reply)", self.stderr())
            size = reply.get("nbytes", 0)
            if type(size) is not int or not 0 <= size <= limits.max_bytes - len(line):
                self.kill()
                raise ChannelError("protocol", f"reply larger than {limits.max_bytes} bytes", self.stderr())
            return reply, self._read_exact(size, deadline, poll)
        except ChannelError:
            raise
        except BaseException:  # the poll's verdict (or an interrupt): the reply is abandoned, so is the process
            self.kill()
            raise

    def _wait_readable(self, deadline: float, poll: Callable[[], None] | None) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise ChannelError("timeout", "deadline passed", self.stderr())
            if readable([self.replies], min(remaining, POLL_INTERVAL) if poll else remaining):
                return
            if poll:
                poll()

    def _read_line(self, deadline: float, limit: int, poll: Callable[[], None] | None) -> bytearray:
        """The reply's header line; bytes after it stay in ``_buffer`` (the payload's start)."""
        buffer = bytearray()  # grows by appending: a large header must not cost quadratic copying or scanning
        while True:
            self._wait_readable(deadline, poll)
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                self._raise_died(deadline)
            newline = chunk.find(b"\n")
            if newline >= 0:
                newline += len(buffer)
                buffer += chunk
                break
            buffer += chunk
            if len(buffer) > limit:
                self.kill()
                raise ChannelError("protocol", f"reply larger than {limit} bytes", self.stderr())
        if newline > limit:
            self.kill()
            raise ChannelError("protocol", f"reply larger than {limit} bytes", self.stderr())
        self._buffer = bytes(buffer[newline + 1:])
        del buffer[newline:]  # in place: a large header is never copied
        return buffer

    def _read_exact(self, size: int, deadline: float, poll: Callable[[], None] | None) -> bytearray:
        body = bytearray(size)
        view = memoryview(body)
        have = min(size, len(self._buffer))
        view[:have] = self._buffer[:have]
        self._buffer = self._buffer[have:]
        while have < size:
            self._wait_readable(deadline, poll)
            got = os.readv(self.replies, [view[have:]])
            if not got:
                self._raise_died(deadline)
            have += got
        return body

    def _send(self, parts: list[memoryview], deadline: float, poll: Callable[[], None] | None = None) -> None:
        """Write a request without ever blocking past the deadline (a stopped candidate reads nothing)."""
        parts = [part for part in parts if len(part)]
        while parts:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise ChannelError("timeout", "deadline passed while sending a request", self.stderr())
            if not writable(self.requests, min(remaining, POLL_INTERVAL) if poll else remaining):
                if poll:
                    poll()
                continue
            try:
                written = os.writev(self.requests, parts[:IOV_MAX])
            except BlockingIOError:
                continue
            except OSError:  # EPIPE: the harness is gone
                self._raise_died(deadline)
            while written and parts:
                if written >= len(parts[0]):
                    written -= len(parts.pop(0))
                else:
                    parts[0], written = parts[0][written:], 0

    def _raise_died(self, deadline: float) -> NoReturn:
        grace = min(deadline, time.monotonic() + 2.0)  # the exit report follows the death within milliseconds
        exit_info = self.monitor.wait_exit(grace) or self.monitor.kill()
        if self.monitor.setup_error():
            raise SandboxSetupError(f"sandbox setup failed: {self.monitor.setup_error()}")
        sig = exit_info.get("signal")
        code = exit_info.get("returncode")
        raise ChannelError("died", f"candidate process exited (code {code})", self.stderr(), sig)

    def exit_info(self) -> dict[str, Any] | None:
        return self.monitor.exit

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of this process's whole tree since it was spawned (harness start-up, the
        candidate's import and every descendant included), measured on the trusted side; final once it ended."""
        return self.monitor.cpu_seconds()

    @property
    def cpu_accounting(self) -> str:
        """The mechanism behind ``cpu_seconds``: ``"cgroup"`` (the kernel's) or ``"proc"`` (sampled fallback)."""
        return self.monitor.meter.mechanism

    def stdout(self) -> str:
        return _tail(self.stdout_path, self.output_limit)

    def stderr(self) -> str:
        return _tail(self.stderr_path, self.output_limit)

    def kill(self) -> None:
        self.monitor.kill()

    def close(self) -> None:
        """End of input lets the harness leave by itself (flushing the candidate's output); then kill what is left."""
        with contextlib.suppress(OSError):
            os.close(self.requests)
        if self.monitor.exit is None:
            self.monitor.wait_exit(time.monotonic() + EXIT_GRACE)
        with contextlib.suppress(OSError):
            os.close(self.replies)
        self.monitor.close()


_swept: set[int] = set()


class Sandbox:
    """Layered sandbox for one problem (limits, readable paths) under one ``SandboxConfig``."""

    def __init__(self, limits: Limits | None = None, config: SandboxConfig | None = None,
                 read_paths: tuple[str | Path, ...] = (), gpu: bool = False, cpus: float = 1.0):
        """``cpus``: the stage's declared CPUs; every process tree gets that many cores of its own (leased so that
        concurrent candidates on the host spread over the cores) and, for a fraction, that share of them."""
        self.limits = limits or Limits()
        self.cpus = cpus
        self.config = config or SandboxConfig()
        self.read_paths = tuple(str(p) for p in read_paths)
        self.gpu = gpu or self.config.gpu
        self.probe = self.server.hello.probe
        missing = missing_layers(self.probe, self.config)
        if missing:
            detail = "; ".join(f"{layer.value} ({why})" for layer, why in missing)
            raise SandboxUnavailable(f"sandbox.require = {self.config.require!r} cannot be met on this host: "
                                     f"missing {detail}")
        self.layers = choose_layers(self.probe, self.config)
        self.level = format_level(self.layers)
        self.cgroup = self.probe.cgroup if Layer.CGROUP in self.layers else None
        if self.server.hello.pid not in _swept:  # once per fork server, i.e. once per process in practice
            _swept.add(self.server.hello.pid)
            sweep_orphaned_scratch()
            if self.cgroup is not None:
                cgroups.sweep_orphaned(self.cgroup)
        self.warm = self.config.warm and self.server.hello.warm_ok
        self._scratches: dict[Path, leases.Lease] = {}  # scratch dir -> the leases its candidate holds
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def server(self) -> ForkServer:
        """This process's fork server (restarted transparently if it died or this process forked)."""
        return get_forkserver(self.config.preload)

    # -------------------------------------------------------------------------------------------- scratch

    def _lease(self) -> leases.Lease:
        """A uid (root launcher with the uid layer) and cores that no other candidate on the host holds."""
        lease = leases.Lease()
        try:
            directory = leases.lease_dir()
            if Layer.UID in self.layers and self.probe.root:
                if self.config.unprivileged_uid is not None:
                    lease.uid = self.config.unprivileged_uid  # shared on purpose: the user chose one uid
                else:
                    leases.take_uid(lease, directory, self.config.uid_base, self.config.uid_count)
            leases.take_cores(lease, directory, max(1, math.ceil(self.cpus)), sorted(os.sched_getaffinity(0)))
        except OSError as exc:
            lease.release()
            raise SandboxSetupError(f"sandbox setup failed: {exc}") from None
        return lease

    def make_scratch(self) -> Path:
        """A private dir for one candidate (its cwd, HOME and TMPDIR), with its uid and cores leased until
        ``remove_scratch``; a tmpfs capped at ``[limits] scratch_mb`` with the ``scratchfs`` layer."""
        lease = self._lease()
        parent = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{self.server.hello.pid}-"))
        os.chmod(parent, 0o711)
        work = parent / "work"
        work.mkdir(mode=0o700)
        owner = os.getuid() if lease.uid is None else lease.uid
        try:
            if Layer.SCRATCHFS in self.layers:
                mount_scratch(work, self.limits.scratch_mb, owner)
            elif lease.uid is not None:
                os.chown(work, owner, owner)
        except OSError as exc:
            lease.release()
            remove_tree(parent)
            raise SandboxSetupError(f"sandbox setup failed: scratch dir: {exc}") from None
        self._register(work, lease)
        return work

    def _register(self, scratch: Path, lease: leases.Lease) -> None:
        with self._lock:
            self._scratches[scratch] = lease
        self.server.track(scratch, lease_fds=lease.fds)  # the server removes it, and holds the leases, if we die

    def remove_scratch(self, scratch: Path) -> None:
        """Remove the dir (its processes must be gone) and release its leases."""
        scratch = Path(scratch)
        with self._lock:
            lease = self._scratches.pop(scratch, None)
        unmount_scratch(scratch)
        remove_tree(scratch.parent if scratch.name == "work" else scratch)
        self.server.track(scratch, in_use=False)
        if lease is not None:
            lease.release()

    def scratch_uid(self, scratch: Path) -> int | None:
        lease = self._scratches.get(Path(scratch))
        return lease.uid if lease else None

    def env(self, scratch: Path, extra: dict[str, str] | None = None, gpu: bool = False) -> dict[str, str]:
        env = candidate_env(scratch, None, gpu)
        env.update(USER="sandbox", LOGNAME="sandbox")  # the candidate's uid has no passwd entry
        env.update(extra or {})
        return env

    def _log_paths(self, scratch: Path) -> tuple[Path, Path]:
        with self._lock:
            self._counter += 1
            n = self._counter
        base = Path(scratch).parent if Path(scratch).name == "work" else Path(scratch)
        return base / f"{n}.stdout", base / f"{n}.stderr"

    def _plan(self, mode: str, argv: list[str], scratch: Path, timeout: float, env: dict[str, str],
              gpu: bool, read_paths: tuple[str, ...]) -> SpawnSpec:
        with self._lock:
            lease = self._scratches.get(Path(scratch))
        if lease is None:  # a dir the caller made itself: lease for it now (released by remove_scratch)
            lease = self._lease()
            if lease.uid is not None:
                os.chown(scratch, lease.uid, lease.uid)
            self._register(Path(scratch), lease)
        mb = self.limits.scratch_mb
        request = PlanInput(
            mode=mode, argv=tuple(argv), scratch=Path(scratch), timeout=timeout, limits=self.limits,
            layers=self.layers, env=env, read_paths=self.read_paths + tuple(read_paths), gpu=gpu,
            uid=lease.uid, harness=str(HARNESS_PATH), tmpfs_mb=self.config.tmpfs_mb, cores=lease.cores,
            scratch_cap=(mb * 1024 * 1024, files_for(mb)),
        )
        try:
            return plan_spawn(request)
        except SpawnError as exc:
            raise SandboxSetupError(str(exc)) from None

    def _meter(self, cores: tuple[int, ...]) -> tuple[CpuMeter, dict[str, tuple[str, ...]]]:
        """A CPU meter for one process tree, and the spec fields that put the tree where the meter looks."""
        if self.cgroup is None:
            return ProcMeter(), {}
        try:
            group = cgroups.CandidateCgroup.create(self.cgroup, self.server.hello.pid, cores, self.cpus)
        except cgroups.CgroupError as exc:
            raise SandboxSetupError(f"sandbox setup failed: {exc}") from None
        return CgroupMeter(group), {"cgroup": group.procs, "cgroup_leave": group.leave}

    def _start(self, spec: SpawnSpec, stdin: int, out_path: Path, err_path: Path, result: int = -1) -> _Monitor:
        meter, placement = self._meter(spec.cores)
        out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            sock = self.server.spawn(dataclasses.replace(spec, **placement), stdin, out_fd, err_fd, result)
        except BaseException:
            meter.finish(None)
            raise
        finally:
            os.close(out_fd)
            os.close(err_fd)
        return _Monitor(sock, meter)

    # -------------------------------------------------------------------------------------------- processes

    def spawn_python(self, scratch: Path, timeout: float, env: dict[str, str] | None = None, *,
                     gpu: bool | None = None, read_paths: tuple[str, ...] = (),
                     warm: bool | None = None) -> SandboxProcess:
        """Start the Python harness (``evaluators/python_harness.py``) in the sandbox."""
        gpu = self.gpu if gpu is None else gpu
        warm = self.warm if warm is None else (warm and self.server.hello.warm_ok)
        argv = [sys.executable, "-s", "-P", str(HARNESS_PATH), "3"]
        spec = self._plan("harness" if warm else "exec", argv, scratch, timeout, self.env(scratch, env, gpu), gpu,
                          read_paths)
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(stdin_w, False)
        for fd in (stdin_w, reply_r):
            with contextlib.suppress(OSError):  # fewer round trips for big data; the default 64 KiB works too
                fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
        out_path, err_path = self._log_paths(scratch)
        try:
            monitor = self._start(spec, stdin_r, out_path, err_path, reply_w)
        except BaseException:
            for fd in (stdin_w, reply_r):
                os.close(fd)
            raise
        finally:
            os.close(stdin_r)
            os.close(reply_w)
        # No wait for "ready": the first request is already queued in the pipe while the layers go up. A setup
        # failure shows up as the process dying, with the monitor's error message.
        return SandboxProcess(monitor, stdin_w, reply_r, Path(scratch), out_path, err_path,
                              self.limits.output_kb * 1024, self.config.max_reply_mb * 1024 * 1024)

    def run(self, argv: list[str], scratch: Path, timeout: float, input: bytes | None = None,
            env: dict[str, str] | None = None, *, gpu: bool | None = None,
            read_paths: tuple[str, ...] = ()) -> RunResult:
        """Run a command to completion in the sandbox; the whole tree dies at the deadline or when it exits."""
        start = time.monotonic()
        gpu = self.gpu if gpu is None else gpu
        spec = self._plan("exec", list(argv), scratch, timeout, self.env(scratch, env, gpu), gpu, read_paths)
        out_path, err_path = self._log_paths(scratch)
        if input is None:
            stdin_fd, writer = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), None
        else:
            stdin_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            writer = threading.Thread(target=_feed, args=(write_fd, input), daemon=True)
        try:
            monitor = self._start(spec, stdin_fd, out_path, err_path)
        except BaseException:
            if writer is not None:
                os.close(write_fd)
            raise
        finally:
            os.close(stdin_fd)
        if writer is not None:
            writer.start()
        try:
            exit_info = monitor.wait_exit(start + timeout)
            timed_out = exit_info is None
            if timed_out:
                exit_info = monitor.kill()
        finally:
            monitor.close()
        if monitor.setup_error():
            raise SandboxSetupError(f"sandbox setup failed: {monitor.setup_error()}")
        limit = self.limits.output_kb * 1024
        result = RunResult(
            returncode=None if timed_out else exit_info.get("returncode"),
            stdout=_tail(out_path, limit),
            stderr=_tail(err_path, limit),
            seconds=time.monotonic() - start,
            timed_out=timed_out,
            signal=None if timed_out else exit_info.get("signal"),
            cpu_seconds=monitor.final_cpu,
            cpu_accounting=monitor.meter.mechanism,
        )
        for path in (out_path, err_path):
            path.unlink(missing_ok=True)
        return result


def _feed(fd: int, data: bytes) -> None:
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError:
        pass  # the process exited or closed its stdin; its result says what happened


class BasicSandbox(Sandbox):
    """Backward-compatible name: ``BasicSandbox(limits)`` is the default hardened ``Sandbox``."""
