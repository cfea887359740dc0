"""Launching untrusted processes: a new session, rlimits, a private scratch dir, a hard wall-clock deadline.

This is the basic launcher (layer "session+rlimits"). The process tree is killed as a whole at the deadline.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from evolve.problem import Limits

ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class RunResult:
    """Outcome of one sandboxed command."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    signal: int | None = None  # signal that ended the process, if any

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


def _rlimits(limits: Limits, cpu_seconds: float) -> list[tuple[int, tuple[int, int]]]:
    mem = limits.memory_mb * 1024 * 1024
    cpu = max(1, int(cpu_seconds) + 1)
    return [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_FSIZE, (limits.file_size_mb * 1024 * 1024,) * 2),
        (resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]


@dataclass
class SandboxProcess:
    """A live sandboxed process speaking JSON lines: requests on its stdin, replies on a dedicated pipe."""

    popen: subprocess.Popen[bytes]
    replies: IO[bytes]
    scratch: Path
    stdout_path: Path
    stderr_path: Path
    output_limit: int
    _buffer: bytes = field(default=b"")

    def request(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        try:
            assert self.popen.stdin is not None
            self.popen.stdin.write((json.dumps(message, allow_nan=True) + "\n").encode())
            self.popen.stdin.flush()
        except (BrokenPipeError, OSError):
            self._raise_died()
        fd = self.replies.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise ChannelError("timeout", "deadline passed", self.stderr())
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self._raise_died()
            self._buffer += chunk
            if len(self._buffer) > 256 * 1024 * 1024:
                self.kill()
                raise ChannelError("protocol", "reply larger than 256 MiB", self.stderr())
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            self.kill()
            raise ChannelError("protocol", "reply is not JSON", self.stderr()) from None
        if not isinstance(reply, dict):
            self.kill()
            raise ChannelError("protocol", "reply is not a JSON object", self.stderr())
        return reply

    def _raise_died(self) -> None:
        try:
            code = self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        sig = -code if code is not None and code < 0 else None
        raise ChannelError("died", f"candidate process exited (code {code})", self.stderr(), sig)

    def _tail(self, path: Path) -> str:
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - self.output_limit))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout(self) -> str:
        return self._tail(self.stdout_path)

    def stderr(self) -> str:
        return self._tail(self.stderr_path)

    def kill(self) -> None:
        _kill_tree(self.popen)

    def close(self) -> None:
        self.kill()
        for stream in (self.popen.stdin, self.replies):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def _kill_tree(popen: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class BasicSandbox:
    """New session + rlimits + private scratch dir + environment allowlist."""

    level = "session+rlimits"

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()

    def make_scratch(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="evolve-sbx-"))

    def remove_scratch(self, scratch: Path) -> None:
        shutil.rmtree(scratch, ignore_errors=True)

    def env(self, scratch: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
        env.update(HOME=str(scratch), TMPDIR=str(scratch), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
        env.update(extra or {})
        return env

    def _popen(self, argv: list[str], scratch: Path, timeout: float, env: dict[str, str] | None,
               pass_fds: tuple[int, ...] = (), stdin: int | None = subprocess.PIPE) -> tuple[subprocess.Popen[bytes], Path, Path]:
        limits = _rlimits(self.limits, timeout)
        out_path, err_path = scratch / ".stdout", scratch / ".stderr"

        def setup() -> None:  # noqa: D401 - runs in the child between fork and exec
            for which, value in limits:
                try:
                    resource.setrlimit(which, value)
                except (ValueError, OSError):
                    pass

        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(  # noqa: S603
                argv, stdin=stdin, stdout=out, stderr=err, cwd=scratch, env=self.env(scratch, env),
                start_new_session=True, pass_fds=pass_fds, preexec_fn=setup, close_fds=True,
            )
        return popen, out_path, err_path

    def spawn_python(self, scratch: Path, timeout: float, env: dict[str, str] | None = None) -> SandboxProcess:
        """Start the Python harness (``evaluators/python_harness.py``) in the sandbox."""
        harness = Path(__file__).resolve().parents[2] / "evaluators" / "python_harness.py"
        read_fd, write_fd = os.pipe()
        try:
            popen, out_path, err_path = self._popen(
                [sys.executable, "-I", str(harness), str(write_fd)], scratch, timeout, env, pass_fds=(write_fd,)
            )
        finally:
            os.close(write_fd)
        return SandboxProcess(popen, os.fdopen(read_fd, "rb", buffering=0), scratch, out_path, err_path,
                              self.limits.output_kb * 1024)

    def run(self, argv: list[str], scratch: Path, timeout: float, input: bytes | None = None,
            env: dict[str, str] | None = None) -> RunResult:
        """Run a command to completion in the sandbox; the whole tree dies at the deadline."""
        start = time.monotonic()
        popen, out_path, err_path = self._popen(argv, scratch, timeout, env,
                                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        timed_out = False
        try:
            if input is not None:
                assert popen.stdin is not None
                try:
                    popen.stdin.write(input)
                    popen.stdin.close()
                except BrokenPipeError:
                    pass
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_tree(popen)
        limit = self.limits.output_kb * 1024
        proc = SandboxProcess(popen, open(os.devnull, "rb"), scratch, out_path, err_path, limit)  # noqa: SIM115
        code = popen.returncode
        result = RunResult(
            returncode=None if timed_out else code,
            stdout=proc.stdout(),
            stderr=proc.stderr(),
            seconds=time.monotonic() - start,
            timed_out=timed_out,
            signal=-code if code is not None and code < 0 and not timed_out else None,
        )
        proc.replies.close()
        return result
