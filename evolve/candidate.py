"""The trusted side's handle on one untrusted candidate during one evaluation stage.

A problem's evaluator (trusted code) receives a ``Candidate`` and never runs candidate code itself: ``call`` runs an
entry point of the candidate in a sandboxed Python process and returns the JSON data it produced; ``run`` runs any
command (a compiler, a compiled kernel test) in the sandbox. Time is measured here, on the trusted side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from evolve.sandbox.launcher import BasicSandbox, ChannelError, RunResult, SandboxProcess
from evolve.types import Status


class CandidateFailure(Exception):
    """The candidate failed in a way that decides its status. Evaluators may raise it, or its subclasses, too."""

    status = Status.RUNTIME_ERROR

    def __init__(self, message: str, artifacts: dict[str, str] | None = None, status: Status | None = None):
        super().__init__(message)
        self.artifacts = dict(artifacts or {})
        if status is not None:
            self.status = status


class WrongOutput(CandidateFailure):
    """Raised by a trusted evaluator when the candidate's output fails a check."""

    status = Status.WRONG_OUTPUT


class CompileError(CandidateFailure):
    status = Status.COMPILE_ERROR


class CandidateTimeout(CandidateFailure):
    status = Status.TIMEOUT


class CandidateMemoryError(CandidateFailure):
    status = Status.MEMORY


def decode_value(value: Any) -> Any:
    """Decode harness JSON (``{"__ndarray__": ...}`` becomes a numpy array)."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if "__ndarray__" in value and set(value) == {"__ndarray__", "dtype", "shape"}:
            try:
                return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
            except (TypeError, ValueError) as exc:
                raise WrongOutput(f"malformed array from candidate: {exc}") from None
        return {k: decode_value(v) for k, v in value.items()}
    return value


def encode_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    return value


class Candidate:
    """One candidate program inside one stage. Use as a context manager; everything it started dies on exit."""

    def __init__(
        self,
        code: str,
        program_id: str,
        stage: str,
        timeout: float,
        seed: int,
        sandbox: BasicSandbox,
        filename: str = "program.py",
        problem_root: Path | None = None,
        gpus: float = 0.0,
    ):
        self.code = code
        self.program_id = program_id
        self.stage = stage
        self.seed = seed  # derived by the trusted side per evaluation; never given to the candidate unless chosen
        self.problem_root = problem_root
        self.gpus = gpus
        self.sandbox = sandbox
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.scratch = sandbox.make_scratch()
        self.path = self.scratch / filename
        self.path.write_text(code)
        self.artifacts: dict[str, str] = {}
        self.call_seconds: list[float] = []
        self._process: SandboxProcess | None = None

    @property
    def isolation(self) -> str:
        return self.sandbox.level

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _deadline(self, timeout: float | None) -> float:
        if timeout is None:
            return self.deadline
        return min(self.deadline, time.monotonic() + timeout)

    def _ensure_process(self) -> SandboxProcess:
        if self._process is None:
            self._process = self.sandbox.spawn_python(self.scratch, self.remaining())
            reply = self._request({"op": "load", "path": str(self.path)}, self.deadline)
            if not reply.get("ok"):
                raise self._failure(reply, Status.COMPILE_ERROR, "importing the candidate failed")
        return self._process

    def _request(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        assert self._process is not None
        try:
            return self._process.request(message, deadline)
        except ChannelError as exc:
            self._close_process()
            stderr = exc.stderr
            if exc.kind == "timeout":
                raise CandidateTimeout(f"stage {self.stage!r} timed out; process tree killed", {"stderr": stderr}) \
                    from None
            if exc.signal_number is not None:
                status = Status.MEMORY if "MemoryError" in stderr else Status.RUNTIME_ERROR
                raise CandidateFailure(f"candidate killed by signal {exc.signal_number}", {"stderr": stderr},
                                       status) from None
            status = Status.MEMORY if "MemoryError" in stderr else Status.RUNTIME_ERROR
            raise CandidateFailure(f"candidate process failed: {exc}", {"stderr": stderr}, status) from None

    def _failure(self, reply: dict[str, Any], default: Status, what: str) -> CandidateFailure:
        kind = reply.get("kind")
        status = Status.MEMORY if kind == "memory" else default
        message = f"{what}: {reply.get('type', 'Error')}: {reply.get('message', '')}"
        artifacts = {"traceback": str(reply.get("traceback", ""))}
        if self._process is not None:
            artifacts["stderr"] = self._process.stderr()
        return CandidateFailure(message, artifacts, status)

    def call(self, entry: str, *args: Any, timeout: float | None = None, using: str | Path | None = None,
             **kwargs: Any) -> Any:
        """Call ``entry`` of the candidate (or of the helper file ``using``) in the sandbox; return its data."""
        self._ensure_process()
        start = time.monotonic()
        reply = self._request(
            {"op": "call", "entry": entry, "args": encode_value(list(args)), "kwargs": encode_value(kwargs),
             "using": str(using) if using else None},
            self._deadline(timeout),
        )
        self.call_seconds.append(time.monotonic() - start)
        if not reply.get("ok"):
            status = Status.COMPILE_ERROR if reply.get("kind") == "import" else Status.RUNTIME_ERROR
            raise self._failure(reply, status, f"calling {entry}() failed")
        return decode_value(reply.get("value"))

    def run(self, argv: list[str], timeout: float | None = None, input: bytes | None = None,
            env: dict[str, str] | None = None) -> RunResult:
        """Run a command in the sandbox with the candidate's scratch dir as cwd."""
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        if limit <= 0:
            raise CandidateTimeout(f"stage {self.stage!r} has no time left")
        result = self.sandbox.run(argv, self.scratch, limit, input=input, env=env)
        if result.timed_out and time.monotonic() >= self.deadline:
            raise CandidateTimeout(f"stage {self.stage!r} timed out; process tree killed", {"stderr": result.stderr})
        return result

    def stdout(self) -> str:
        return self._process.stdout() if self._process else ""

    def _close_process(self) -> None:
        if self._process is not None:
            self.artifacts.setdefault("stderr", self._process.stderr())
            self._process.close()
            self._process = None

    def close(self) -> None:
        self._close_process()
        self.sandbox.remove_scratch(self.scratch)

    def __enter__(self) -> Candidate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
