"""The trusted side's handle on one untrusted candidate during one evaluation stage.

A problem's evaluator (trusted code) receives a ``Candidate`` and never runs candidate code itself: ``call`` runs an
entry point of the candidate in a sandboxed Python process and returns the data it produced; ``run`` runs any
command (a compiler, a compiled kernel test) in the sandbox. The boundary is hardened on this side:

* time is measured here, from sending a request to reading its reply (a candidate patching its clocks changes
  nothing), and CPU time is the kernel's count for the candidate's whole process tree (``cpu_seconds``), which a
  ``cpu_limit`` watches while the candidate has the turn;
* replies are data only (JSON plus raw numeric arrays, ``evolve.channel``), capped in size
  (``sandbox.max_reply_mb``), depth (``sandbox.max_reply_depth``) and number of values before anything is parsed,
  must echo the request's random id, and nothing may arrive unasked: a candidate writing to the result channel
  itself can do no more than returning that data would; the evaluator validates values;
* the candidate's file is rewritten from the trusted copy before every process it starts (``restart``, a second
  process in a stage), so a candidate rewriting its own source affects nothing.

In-process mode (``run_evaluator_in_sandbox``) exists only for evaluators written in other engines' style, whose
evaluator imports and runs the program itself: the whole evaluator then runs inside the sandbox, the result is
marked ``in_process``, and ``sandbox.allow_in_process`` must be on.
"""

from __future__ import annotations
import __future__

import base64
import contextlib
import functools
import importlib.util
import marshal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from evolve import channel
from evolve.channel import ARRAY_KINDS, ReplyError, ReplyLimits
from evolve.sandbox.launcher import ChannelError, RunResult, Sandbox, SandboxProcess, SandboxSetupError
from evolve.types import Status

__all__ = ["ARRAY_KINDS", "Candidate", "CandidateFailure", "CandidateMemoryError", "CandidateTimeout",
           "CompileError", "CpuBudgetExceeded", "EvaluatorError", "InProcessNotAllowed", "WrongOutput",
           "decode_value", "encode_value", "evaluator_code"]


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


class CpuBudgetExceeded(CandidateTimeout):
    """A ``cpu_limit`` was passed during a call: the candidate's process tree was killed (the next call starts a
    fresh process). Evaluators with CPU budgets catch it; uncaught, the stage is a timeout."""


class CandidateMemoryError(CandidateFailure):
    status = Status.MEMORY


class EvaluatorError(Exception):
    """The evaluator's own failure: always recorded as ``evaluator_error``, even after the candidate's data arrived
    (where any other exception counts as the candidate's ``wrong_output``). See ``evaluator_code``."""


@contextlib.contextmanager
def evaluator_code() -> Iterator[None]:
    """Mark trusted work that does not depend on the candidate's data (references, fixtures): an exception inside
    is the evaluator's (``evaluator_error``), not the candidate's."""
    try:
        yield
    except (CandidateFailure, EvaluatorError):
        raise
    except Exception as exc:
        raise EvaluatorError(f"{type(exc).__name__}: {exc}") from exc


class InProcessNotAllowed(RuntimeError):
    """``run_evaluator_in_sandbox`` was called while ``sandbox.allow_in_process`` is off (an evaluator error)."""


MEMORY_MARKERS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")


def _looks_like_memory(stderr: str) -> bool:
    """A process that died at its memory limit usually says so on stderr (Python, C++ or libc wording)."""
    return any(marker in stderr for marker in MEMORY_MARKERS)


def decode_value(value: Any, arrays: list[np.ndarray] | tuple[np.ndarray, ...] = (),
                 max_depth: int = channel.DEFAULT_MAX_DEPTH) -> Any:
    """Reply data to Python data (``{"__array__": i}`` becomes ``arrays[i]``); ``WrongOutput`` when malformed."""
    try:
        return channel.decode_value(value, arrays, max_depth)
    except ReplyError as exc:
        raise WrongOutput(f"malformed data from the candidate: {exc}") from None


def encode_value(value: Any) -> Any:
    """Trusted data to plain JSON data (arrays as nested lists); ``Candidate.call`` sends arrays as raw buffers."""
    return channel.encode_value(value)


CODE_FLAGS = __future__.annotations.compiler_flag  # the harness's (``evaluators/python_harness.py``)


@functools.lru_cache(maxsize=64)
def _compiled(path: str, source: str) -> dict[str, str]:
    """Trusted source (an evaluator, a helper) with its code compiled here once, for the harness to load instead of
    compiling it again in every process. Never used for candidate code: compiling hostile source is the sandbox's."""
    code = compile(source, path, "exec", flags=CODE_FLAGS, dont_inherit=True)
    return {"source": source, "code": base64.b64encode(marshal.dumps(code)).decode("ascii"),
            "magic": importlib.util.MAGIC_NUMBER.hex()}


def trusted_code(path: str, source: str) -> dict[str, str]:
    """The request fields that carry a trusted module: its source, and its code when it compiles here."""
    try:
        return _compiled(path, source)
    except (SyntaxError, ValueError):  # the harness reports it, as it always did
        return {"source": source}


def reply_limits(sandbox: Sandbox) -> ReplyLimits:
    """The sandbox config's caps on one reply."""
    config = sandbox.config
    return ReplyLimits(max_bytes=config.max_reply_mb * 1024 * 1024, max_depth=config.max_reply_depth)


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
        self.limits = reply_limits(sandbox)
        self.scratch = sandbox.make_scratch()
        self.path = self.scratch / filename
        self._write_source()
        self.artifacts: dict[str, str] = {}
        self.call_seconds: list[float] = []
        self.in_process = False  # set when an evaluator ran inside the candidate's process
        self.received = False  # set once data produced by the candidate reached the evaluator (see run_stage)
        self.startup_values: dict[str, Any] = {}
        self._startup: list[tuple[Path, str, tuple[Any, ...]]] = []
        self._process: SandboxProcess | None = None
        self._helpers_sent: set[str] = set()
        self._cpu_base = 0.0  # the live process's tree CPU when the candidate's import began
        self._cpu_done = 0.0  # CPU of the processes already closed, counted from the same point
        self._cpu_until: float | None = None
        self._kept: list[Any] = []  # objects a live process may use (shared device buffers): freed after it dies
        self._wants_cpu = False  # set by the first cpu_seconds()/cpu_limit(): then every process reads its base

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

    # ------------------------------------------------------------------------------------ process and CPU

    def add_startup(self, using: str | Path, entry: str, *args: Any) -> None:
        """Call ``entry(None, *args)`` of the helper file ``using`` in every new process before the candidate's
        module is imported (an array module to import, a device to open); its value goes to
        ``startup_values[entry]``. That work is the harness's, not the candidate's: ``cpu_seconds`` excludes it."""
        self._startup.append((Path(using), entry, args))

    def start(self) -> None:
        """Start the candidate's process now (start-up calls, then its import) unless one is running."""
        self._ensure_process()

    def _ensure_process(self) -> SandboxProcess:
        if self._process is None:
            self._process = self._spawn()
            self._helpers_sent = set()
            self._cpu_base = 0.0
            until, self._cpu_until = self._cpu_until, None  # start-up work is not the candidate's: not watched
            try:
                for using, entry, args in self._startup:
                    self.startup_values[entry] = self._call(entry, args, {}, self.deadline, using)
            finally:
                self._cpu_until = until
            if self._wants_cpu:
                self._cpu_base = self._process_cpu(self._process)
            reply, _ = self._request({"op": "load", "path": str(self.path)}, self.deadline)
            if not reply.get("ok"):
                failure = self._failure(reply, Status.COMPILE_ERROR, "importing the candidate failed")
                self._close_process()
                raise failure
        return self._process

    @staticmethod
    def _process_cpu(process: SandboxProcess) -> float:
        reader = getattr(process, "cpu_seconds", None)
        if reader is None:
            raise NotImplementedError("this sandbox cannot measure a process tree's CPU time "
                                      "(SandboxProcess.cpu_seconds is missing)")
        return float(reader())

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) of the candidate's process trees in this stage, measured by the kernel on
        this side: every process ``call`` started, children included, from the moment the candidate's module began
        to import (the harness's start-up and ``add_startup`` work excluded), closed processes included.

        Call it once before the first ``call`` when CPU matters (``cpu_limit`` does): a process started earlier
        has no recorded base, and its whole CPU, start-up included, is counted."""
        self._wants_cpu = True
        live = self._process_cpu(self._process) - self._cpu_base if self._process is not None else 0.0
        return self._cpu_done + max(0.0, live)

    @contextlib.contextmanager
    def cpu_limit(self, until: float) -> Iterator[None]:
        """Inside this block, a call is ended once ``cpu_seconds()`` passes ``until``: the process tree is killed
        and ``CpuBudgetExceeded`` raised (checked about every 10 ms while the candidate has the turn)."""
        self._wants_cpu = True
        previous, self._cpu_until = self._cpu_until, until
        try:
            yield
        finally:
            self._cpu_until = previous

    def _check_cpu(self) -> None:
        if self._cpu_until is not None and self.cpu_seconds() > self._cpu_until:
            raise CpuBudgetExceeded(f"stage {self.stage!r}: CPU budget spent ({self._cpu_until:.3g} CPU s); "
                                    "process tree killed")

    # ------------------------------------------------------------------------------------ requests

    def _request(self, message: dict[str, Any], deadline: float, process: SandboxProcess | None = None,
                 payload: list[bytes | memoryview] | None = None) -> tuple[dict[str, Any], bytearray]:
        process = process or self._process
        assert process is not None
        watched = process is self._process and self._cpu_until is not None
        try:
            if watched:
                self._check_cpu()
            return process.exchange(message, deadline, payload or (), limits=self.limits,
                                    poll=self._check_cpu if watched else None)
        except CpuBudgetExceeded:
            self._close_process()
            raise
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
        status = {"memory": Status.MEMORY, "encode": Status.WRONG_OUTPUT}.get(str(kind), default)
        message = f"{what}: {str(reply.get('type', 'Error'))[:200]}: {str(reply.get('message', ''))[:4000]}"
        artifacts = {"traceback": str(reply.get("traceback", ""))[:16000]}
        if self._process is not None:
            artifacts["stderr"] = self._process.stderr()
        return CandidateFailure(message, artifacts, status)

    def _decode_reply(self, reply: dict[str, Any], payload: bytearray) -> Any:
        try:
            arrays = channel.read_arrays(reply.get("arrays"), payload)
        except ReplyError as exc:
            raise WrongOutput(f"malformed data from the candidate: {exc}") from None
        return decode_value(reply.get("value"), arrays, self.limits.max_depth)

    def _call(self, entry: str, args: Any, kwargs: Any, deadline: float, using: Path | None,
              arrays: list[np.ndarray] | None = None) -> Any:
        """One call request. Without ``arrays``, ``args``/``kwargs`` are Python data to encode; with it, they are
        already JSON data whose ``{"__array__": i}`` references point into ``arrays``."""
        if arrays is None:
            arrays = []
            args, kwargs = channel.encode_value(list(args), arrays), channel.encode_value(kwargs, arrays)
        helper = str(using) if using is not None else None
        message = {"op": "call", "entry": entry, "args": args, "kwargs": kwargs, "using": helper, "source": None}
        if using is not None and helper not in self._helpers_sent:
            message.update(trusted_code(str(using), using.read_text()))  # once per process: the harness keeps it
        payload: list[bytes | memoryview] = []
        if arrays:
            message["arrays"], payload = channel.pack_arrays(arrays)
        start = time.monotonic()
        reply, body = self._request(message, deadline, payload=payload)
        self.call_seconds.append(time.monotonic() - start)
        if helper is not None:
            self._helpers_sent.add(helper)
        if not reply.get("ok"):
            status = Status.COMPILE_ERROR if reply.get("kind") == "import" else Status.RUNTIME_ERROR
            raise self._failure(reply, status, f"calling {entry}() failed")
        return self._decode_reply(reply, body)

    def call_encoded(self, entry: str, args: list[Any], arrays: list[np.ndarray], *, timeout: float | None = None,
                     using: str | Path | None = None) -> Any:
        """``call`` with arguments already encoded (``evolve.channel.encode_value``): JSON data referencing
        ``arrays`` as ``{"__array__": i}``. For callers that build many requests (a training loop)."""
        self._ensure_process()
        helper = using if isinstance(using, Path) or using is None else Path(using)
        value = self._call(entry, args, {}, self._deadline(timeout), helper, arrays)
        self.received = True
        return value

    def call(self, entry: str, *args: Any, timeout: float | None = None, using: str | Path | None = None,
             **kwargs: Any) -> Any:
        """Call ``entry`` of the candidate (or of the helper file ``using``) in the sandbox; return its data.

        Arguments and results are JSON data and numeric numpy arrays (sent as raw buffers). The helper's source is
        read here and sent over the request channel, so the helper file itself need not be readable inside the
        sandbox. Time is measured here, from sending the request to reading the reply.
        """
        self._ensure_process()
        value = self._call(entry, args, kwargs, self._deadline(timeout), Path(using) if using else None)
        self.received = True
        return value

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
            reply, body = self._request(
                {"op": "evaluate", "path": str(evaluator_path), **trusted_code(str(evaluator_path), source),
                 "function": function_name, "program_path": str(program_path or self.path)},
                self._deadline(timeout), process,
            )
            self.call_seconds.append(time.monotonic() - start)
            self.received = True
            if not reply.get("ok"):
                status = Status.COMPILE_ERROR if reply.get("kind") == "import" else Status.RUNTIME_ERROR
                failure = self._failure(reply, status, f"in-process evaluator {function_name}() failed")
                failure.artifacts["stderr"] = process.stderr()
                raise failure
            value = self._decode_reply(reply, body)
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
        self.received = True  # its output, and whatever it left in the scratch dir, are the candidate's data
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
            process, self._process = self._process, None
            self.artifacts.setdefault("stderr", process.stderr())
            process.close()
            if self._wants_cpu:  # counted after the tree is gone: nothing escapes
                self._cpu_done += max(0.0, self._process_cpu(process) - self._cpu_base)
            self._cpu_base = 0.0

    def keep_until_closed(self, resource: Any) -> None:
        """Hold ``resource`` (a device buffer the candidate's processes have mapped) until every process is gone."""
        self._kept.append(resource)

    def close(self) -> None:
        self._close_process()
        self._kept.clear()
        self.sandbox.remove_scratch(self.scratch)

    def __enter__(self) -> Candidate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

