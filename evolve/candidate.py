"""The trusted side's handle on one untrusted candidate during one evaluation stage.

A problem's evaluator (trusted code) receives a ``Candidate`` and never runs candidate code itself: ``call`` runs an
entry point of the candidate in a sandboxed Python process and returns the JSON data it produced; ``run`` runs any
command (a compiler, a compiled kernel test) in the sandbox. The boundary is hardened on this side:

* time is measured here, from sending a request to reading its reply (a candidate patching its clocks changes
  nothing);
* replies are plain JSON data, capped in size (``sandbox.max_reply_mb``), must echo the request's random id, and
  nothing may arrive unasked: a candidate writing to the result channel itself can do no more than returning that
  data would; arrays must be numeric (no object dtype), and the evaluator validates values;
* the candidate's file is rewritten from the trusted copy before every process it starts (``restart``, a second
  process in a stage), so a candidate rewriting its own source affects nothing.

In-process mode (``run_evaluator_in_sandbox``) exists only for evaluators written in other engines' style, whose
evaluator imports and runs the program itself: the whole evaluator then runs inside the sandbox, the result is
marked ``in_process``, and ``sandbox.allow_in_process`` must be on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from evolve.sandbox.launcher import ChannelError, RunResult, Sandbox, SandboxProcess, SandboxSetupError
from evolve.types import Status

ARRAY_KINDS = "biufc"  # bool, int, uint, float, complex: no object or string arrays from a candidate


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


class InProcessNotAllowed(RuntimeError):
    """``run_evaluator_in_sandbox`` was called while ``sandbox.allow_in_process`` is off (an evaluator error)."""


MEMORY_MARKERS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")


def _looks_like_memory(stderr: str) -> bool:
    """A process that died at its memory limit usually says so on stderr (Python, C++ or libc wording)."""
    return any(marker in stderr for marker in MEMORY_MARKERS)


def decode_value(value: Any) -> Any:
    """Decode harness JSON (``{"__ndarray__": ...}`` becomes a numpy array)."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if "__ndarray__" in value and set(value) == {"__ndarray__", "dtype", "shape"}:
            try:
                dtype = np.dtype(value["dtype"])
                if dtype.kind not in ARRAY_KINDS:
                    raise TypeError(f"dtype {dtype} is not numeric")
                return np.asarray(value["__ndarray__"], dtype=dtype).reshape(value["shape"])
            except (TypeError, ValueError, OverflowError) as exc:
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
        sandbox: Sandbox,
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
        self._write_source()
        self.artifacts: dict[str, str] = {}
        self.call_seconds: list[float] = []
        self.in_process = False  # set when an evaluator ran inside the candidate's process
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

    def _write_source(self) -> None:
        """(Re)write the candidate's file from the trusted copy: an earlier process may have rewritten it."""
        self.path.unlink(missing_ok=True)
        self.path.write_text(self.code)
        self.path.chmod(0o444)

    def _spawn(self, read_paths: tuple[str, ...] = ()) -> SandboxProcess:
        if self.remaining() <= 0:
            raise CandidateTimeout(f"stage {self.stage!r} has no time left")
        self._write_source()
        try:
            return self.sandbox.spawn_python(self.scratch, self.remaining(), gpu=self.gpus > 0 or None,
                                             read_paths=read_paths)
        except SandboxSetupError as exc:
            raise CandidateFailure(str(exc), status=Status.SYSTEM_ERROR) from None

    def _ensure_process(self) -> SandboxProcess:
        if self._process is None:
            self._process = self._spawn()
            reply = self._request({"op": "load", "path": str(self.path)}, self.deadline)
            if not reply.get("ok"):
                raise self._failure(reply, Status.COMPILE_ERROR, "importing the candidate failed")
        return self._process

    def _request(self, message: dict[str, Any], deadline: float, process: SandboxProcess | None = None) \
            -> dict[str, Any]:
        process = process or self._process
        assert process is not None
        try:
            return process.request(message, deadline)
        except SandboxSetupError as exc:
            if process is self._process:
                self._close_process()
            else:
                process.close()
            raise CandidateFailure(str(exc), status=Status.SYSTEM_ERROR) from None
        except ChannelError as exc:
            if process is self._process:
                self._close_process()
            else:
                self.artifacts.setdefault("stderr", process.stderr())
                process.close()
            stderr = exc.stderr
            if exc.kind == "timeout":
                raise CandidateTimeout(f"stage {self.stage!r} timed out; process tree killed", {"stderr": stderr}) \
                    from None
            if exc.kind == "protocol":
                raise CandidateFailure(f"candidate broke the result protocol: {exc}", {"stderr": stderr},
                                       Status.WRONG_OUTPUT) from None
            status = Status.MEMORY if _looks_like_memory(stderr) else Status.RUNTIME_ERROR
            if exc.signal_number is not None:
                raise CandidateFailure(f"candidate killed by signal {exc.signal_number}", {"stderr": stderr},
                                       status) from None
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
        """Call ``entry`` of the candidate (or of the helper file ``using``) in the sandbox; return its data.

        The helper's source is read here and sent over the request channel, so the helper file itself need not be
        readable inside the sandbox. Time is measured here, from sending the request to reading the reply.
        """
        source = Path(using).read_text() if using else None
        self._ensure_process()
        start = time.monotonic()
        reply = self._request(
            {"op": "call", "entry": entry, "args": encode_value(list(args)), "kwargs": encode_value(kwargs),
             "using": str(using) if using else None, "source": source},
            self._deadline(timeout),
        )
        self.call_seconds.append(time.monotonic() - start)
        if not reply.get("ok"):
            status = Status.COMPILE_ERROR if reply.get("kind") == "import" else Status.RUNTIME_ERROR
            raise self._failure(reply, status, f"calling {entry}() failed")
        return decode_value(reply.get("value"))

    def run_evaluator_in_sandbox(self, evaluator_path: str | Path, function_name: str = "evaluate",
                                 program_path: str | Path | None = None, timeout: float | None = None) \
            -> dict[str, Any]:
        """Run a whole evaluator in other engines' style, ``function_name(program_path) -> dict``, in the sandbox.

        "In-process" mode: the evaluator shares the candidate's process, so the candidate can tamper with it (patch
        its clock, reach its frames). Only for evaluators written for engines that work this way; the result is
        marked ``in_process`` (``Candidate.in_process``) and needs ``sandbox.allow_in_process = true``. The
        evaluator's directory is readable in the sandbox (its data files sit there). Returns the metrics dict;
        artifacts the evaluator returned are added to ``candidate.artifacts``.
        """
        if not self.sandbox.config.allow_in_process:
            raise InProcessNotAllowed("in-process evaluation is disabled; set sandbox.allow_in_process = true to "
                                      "run evaluators that share the candidate's process")
        evaluator_path = Path(evaluator_path).resolve()
        source = evaluator_path.read_text()
        self.in_process = True
        process = self._spawn(read_paths=(str(evaluator_path.parent),))
        try:
            start = time.monotonic()
            reply = self._request(
                {"op": "evaluate", "path": str(evaluator_path), "source": source, "function": function_name,
                 "program_path": str(program_path or self.path)},
                self._deadline(timeout), process,
            )
            self.call_seconds.append(time.monotonic() - start)
            if not reply.get("ok"):
                status = Status.COMPILE_ERROR if reply.get("kind") == "import" else Status.RUNTIME_ERROR
                failure = self._failure(reply, status, f"in-process evaluator {function_name}() failed")
                failure.artifacts["stderr"] = process.stderr()
                raise failure
            value = decode_value(reply.get("value"))
            if not isinstance(value, dict) or not isinstance(value.get("metrics"), dict):
                raise WrongOutput("in-process evaluator returned malformed data")
            self.artifacts.update({str(k): str(v) for k, v in dict(value.get("artifacts") or {}).items()})
            return {str(k): v for k, v in value["metrics"].items()}
        finally:
            process.close()

    def run(self, argv: list[str], timeout: float | None = None, input: bytes | None = None,
            env: dict[str, str] | None = None) -> RunResult:
        """Run a command in the sandbox with the candidate's scratch dir as cwd."""
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        if limit <= 0:
            raise CandidateTimeout(f"stage {self.stage!r} has no time left")
        try:
            result = self.sandbox.run(argv, self.scratch, limit, input=input, env=env, gpu=self.gpus > 0 or None)
        except SandboxSetupError as exc:
            raise CandidateFailure(str(exc), status=Status.SYSTEM_ERROR) from None
        if result.timed_out and time.monotonic() >= self.deadline:
            raise CandidateTimeout(f"stage {self.stage!r} timed out; process tree killed", {"stderr": result.stderr})
        return result

    def restart(self) -> None:
        """Kill the candidate's process tree; the next ``call`` starts a fresh process from the trusted source."""
        self._close_process()

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
