"""Runs inside the sandbox, in the same process as an untrusted Python candidate.

Protocol: one JSON request per line on stdin, one JSON reply per line on the result descriptor given as argv[1].
Every request carries an ``id`` that the reply echoes. Nothing here is trusted by the engine: the trusted side treats
every reply as data produced by the candidate, checks the ``id``, measures time itself, caps the reply size and
validates values itself. This file only has to be robust, not secure.

Requests:
  {"op": "load", "path": "/scratch/program.py"}                  -> {"ok": true}
  {"op": "call", "entry": "f", "args": [...], "kwargs": {...},
   "using": "/path/to/helper.py" | null, "source": "..."}         -> {"ok": true, "value": ...}
  {"op": "evaluate", "path": "/problem/evaluator.py", "source": "...",
   "function": "evaluate", "program_path": "/scratch/program.py"} -> {"ok": true, "value": {...}}
With ``using``, the helper module (its source sent by the trusted side, compiled here under its original file name)
has its ``entry`` called as ``entry(candidate_module, *args, **kwargs)``: problem code that must run next to the
candidate (a training loop calling the candidate's step function thousands of times). ``evaluate`` runs a whole
evaluator in other engines' style (``evaluate(program_path) -> dict``) in this process: "in-process" mode.
Errors reply {"ok": false, "kind": "import" | "exception" | "memory" | "encode" | "protocol", "type", "message",
"traceback"}.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import traceback
import types
from typing import Any

MAX_REPLY_BYTES = 64 * 1024 * 1024


def _encode(value: Any) -> Any:
    """Turn candidate return values into JSON data; numpy arrays keep dtype and shape."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and hasattr(value, "dtype"):
        if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
            host = value.get() if hasattr(value, "get") and not hasattr(value, "__array_interface__") else value
            return {"__ndarray__": _encode(host.tolist()), "dtype": str(value.dtype), "shape": list(value.shape)}
        return _encode(tolist())
    raise TypeError(f"cannot send a {type(value).__name__} across the sandbox boundary (JSON data only)")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__ndarray__" in value:
            import numpy as np

            return np.asarray(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _load_module(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _module_from_source(name: str, path: str, source: str) -> Any:
    """A module compiled from source the trusted side sent (the file itself may be unreadable in the sandbox)."""
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    directory = os.path.dirname(path)
    if directory and directory not in sys.path:
        sys.path.append(directory)  # sibling modules, where the sandbox lets them be read
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - the point of the harness
    return module


def _error(kind: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MemoryError):
        kind = "memory"
    return {
        "ok": False,
        "kind": kind,
        "type": type(exc).__name__,
        "message": str(exc)[:4000],
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
    }


def _evaluation_result(value: Any) -> Any:
    """Accept a dict or an object with ``metrics`` (and ``artifacts``), as other engines' evaluators return."""
    if isinstance(value, dict):
        return {"metrics": value, "artifacts": {}}
    metrics = getattr(value, "metrics", None)
    if isinstance(metrics, dict):
        artifacts = getattr(value, "artifacts", None) or {}
        return {"metrics": metrics, "artifacts": {str(k): str(v) for k, v in dict(artifacts).items()}}
    raise TypeError(f"evaluator returned {type(value).__name__}, expected a dict of metrics")


def main() -> None:
    result_fd = int(sys.argv[1])
    # The candidate's own prints must never reach the protocol streams: stdout goes to the captured log.
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    replies = os.fdopen(result_fd, "w", encoding="utf-8")
    candidate: Any = None
    helpers: dict[str, Any] = {}
    for line in requests:
        try:
            request = json.loads(line)
        except ValueError:
            break
        op = request.get("op")
        reply: dict[str, Any]
        if op == "load":
            try:
                sys.path.insert(0, os.path.dirname(request["path"]))
                candidate = _load_module("candidate_program", request["path"])
                reply = {"ok": True}
            except BaseException as exc:  # noqa: BLE001 - the candidate may raise anything, SystemExit included
                reply = _error("import", exc)
        elif op in ("call", "evaluate"):
            try:
                args = _decode(request.get("args", []))
                kwargs = _decode(request.get("kwargs", {}))
                using = request.get("using")
                if op == "evaluate":
                    module = _module_from_source(f"evolve_inprocess_evaluator_{len(helpers)}", request["path"],
                                                 request["source"])
                    value = _evaluation_result(getattr(module, request["function"])(request["program_path"]))
                elif using:
                    if using not in helpers:
                        helpers[using] = _module_from_source(f"evolve_stage_helper_{len(helpers)}", using,
                                                             request["source"])
                    value = getattr(helpers[using], request["entry"])(candidate, *args, **kwargs)
                else:
                    value = getattr(candidate, request["entry"])(*args, **kwargs)
                try:
                    reply = {"ok": True, "value": _encode(value)}
                except BaseException as exc:  # noqa: BLE001
                    reply = _error("encode", exc)
            except BaseException as exc:  # noqa: BLE001
                reply = _error("exception", exc)
        else:
            reply = {"ok": False, "kind": "protocol", "type": "ValueError", "message": f"unknown op {op!r}"}
        reply["id"] = request.get("id")
        try:
            text = json.dumps(reply, allow_nan=True)
        except BaseException as exc:  # noqa: BLE001
            text = json.dumps({**_error("encode", exc), "id": request.get("id")})
        if len(text) > MAX_REPLY_BYTES:
            text = json.dumps({"ok": False, "kind": "encode", "type": "ValueError", "message": "reply too large",
                               "id": request.get("id")})
        replies.write(text + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
    # Leave at once at end of input, like the warm path: no atexit handlers or thread joins of the candidate.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(0)
