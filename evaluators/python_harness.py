"""Runs inside the sandbox, in the same process as an untrusted Python candidate.

Protocol (``evolve/channel.py``): one JSON header line per message, followed by ``nbytes`` bytes of array payload
when the header says so; arrays are referenced in the JSON data as ``{"__array__": i}`` and described by the
header's ``arrays`` list (``[dtype, shape, offset]``). Requests arrive on stdin, replies go to the result descriptor
given as argv[1]. Every request carries an ``id`` that the reply echoes. Nothing here is trusted by the engine: the
trusted side treats every reply as data produced by the candidate, checks the ``id``, measures time itself, caps the
reply's size, depth and number of values, and validates values itself. This file only has to be robust, not secure.

Requests:
  {"op": "load", "path": "/scratch/program.py"}                  -> {"ok": true}
  {"op": "call", "entry": "f", "args": [...], "kwargs": {...},
   "using": "/path/to/helper.py" | null, "source": "..." | null}  -> {"ok": true, "value": ...}
  {"op": "evaluate", "path": "/problem/evaluator.py", "source": "...",
   "function": "evaluate", "program_path": "/scratch/program.py"} -> {"ok": true, "value": {...}}
With ``using``, the helper module (its source sent by the trusted side with the first call that uses it, compiled
here under its original file name, or already compiled: see ``code`` below) has its ``entry`` called as ``entry(candidate_module, *args, **kwargs)``; a
helper may be called before the candidate is loaded (``candidate_module`` is then None). ``evaluate`` runs a whole
evaluator in other engines' style (``evaluate(program_path) -> dict``) in this process: "in-process" mode.
Trusted code (an evaluator, a helper) may come compiled too: ``"code"`` is the base64 of its marshalled code object and
``"magic"`` the bytecode magic number of the interpreter that made it, used when it is this interpreter's (a fork
child compiling even a short file copies many pages of the server's memory; loading the code costs a fraction).
Errors reply {"ok": false, "kind": "import" | "exception" | "memory" | "encode" | "protocol", "type", "message",
"traceback"}.
"""

from __future__ import annotations
import __future__

import base64
import contextlib
import importlib.util
import json
import marshal
import os
import sys
import traceback
import types
from typing import Any

MAX_REPLY_BYTES = 64 * 1024 * 1024
ALIGN = 8
ARRAY_TAG = "__array__"


def _host_array(value: Any) -> Any:
    """A NumPy array for an array-like with a shape (NumPy, CuPy via ``get``), else None."""
    if not hasattr(value, "dtype") or getattr(value, "ndim", 0) == 0 or not hasattr(value, "shape"):
        return None
    import numpy as np

    host = value.get() if hasattr(value, "get") and not hasattr(value, "__array_interface__") else value
    array = np.ascontiguousarray(np.asarray(host))
    if array.dtype.kind not in "biufc":
        raise TypeError(f"cannot send an array of dtype {array.dtype} (numeric arrays only)")
    return array


def _encode(value: Any, arrays: list[Any]) -> Any:
    """Turn candidate return values into JSON data; arrays go to ``arrays`` (raw bytes, dtype and shape kept)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v, arrays) for k, v in value.items()}
    array = _host_array(value)
    if array is not None:
        arrays.append(array)
        return {ARRAY_TAG: len(arrays) - 1}
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and hasattr(value, "dtype"):  # 0-d arrays and numpy scalars
        return _encode(tolist(), arrays)
    raise TypeError(f"cannot send a {type(value).__name__} across the sandbox boundary (JSON data only)")


def _frame(header: dict[str, Any], arrays: list[Any]) -> bytes:
    layout, parts, offset = [], [], 0
    for array in arrays:
        pad = -offset % ALIGN
        if pad:
            parts.append(bytes(pad))
            offset += pad
        layout.append([array.dtype.str, list(array.shape), offset])
        parts.append(array.tobytes())
        offset += array.nbytes
    if arrays:
        header = {**header, "arrays": layout, "nbytes": offset}
    return (json.dumps(header, allow_nan=True) + "\n").encode() + b"".join(parts)


def _arrays(request: dict[str, Any], payload: bytearray) -> list[Any]:
    layout = request.get("arrays") or []
    if not layout:
        return []
    import numpy as np

    out = []
    for dtype, shape, offset in layout:
        count = 1
        for size in shape:
            count *= size
        out.append(np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape) if count
                   else np.zeros(shape, dtype=dtype))
    return out


def _decode(value: Any, arrays: list[Any]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and ARRAY_TAG in value:
            return arrays[value[ARRAY_TAG]]
        return {k: _decode(v, arrays) for k, v in value.items()}
    return value


def _read_exact(stream: Any, size: int) -> bytearray:
    payload = bytearray(size)
    view, have = memoryview(payload), 0
    while have < size:
        got = stream.readinto(view[have:])
        if not got:
            raise EOFError("request payload cut short")
        have += got
    return payload


def _load_module(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


CODE_FLAGS = __future__.annotations.compiler_flag  # what compile() here always inherited; the trusted side uses it too


def _code(request: dict[str, Any], path: str) -> Any:
    """The code object of the trusted module in ``request``: the compiled one when this interpreter can load it."""
    code = request.get("code")
    if code and request.get("magic") == importlib.util.MAGIC_NUMBER.hex():
        with contextlib.suppress(ValueError, EOFError, TypeError):
            return marshal.loads(base64.b64decode(code))
    return compile(request["source"], path, "exec", flags=CODE_FLAGS, dont_inherit=True)


def _module_from_source(name: str, path: str, request: dict[str, Any]) -> Any:
    """A module made from the code the trusted side sent (the file itself may be unreadable in the sandbox)."""
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    directory = os.path.dirname(path)
    if directory and directory not in sys.path:
        sys.path.append(directory)  # sibling modules, where the sandbox lets them be read
    exec(_code(request, path), module.__dict__)  # noqa: S102 - the point of the harness
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
    requests = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    replies = os.fdopen(result_fd, "wb")
    candidate: Any = None
    helpers: dict[str, Any] = {}
    while line := requests.readline():
        try:
            request = json.loads(line)
            payload = _read_exact(requests, int(request.get("nbytes") or 0))
        except (ValueError, EOFError):
            break
        op = request.get("op")
        reply: dict[str, Any]
        out: list[Any] = []
        if op == "load":
            try:
                sys.path.insert(0, os.path.dirname(request["path"]))
                candidate = _load_module("candidate_program", request["path"])
                reply = {"ok": True}
            except BaseException as exc:  # noqa: BLE001 - the candidate may raise anything, SystemExit included
                reply = _error("import", exc)
        elif op in ("call", "evaluate"):
            try:
                arrays = _arrays(request, payload)
                args = _decode(request.get("args", []), arrays)
                kwargs = _decode(request.get("kwargs", {}), arrays)
                using = request.get("using")
                if op == "evaluate":
                    module = _module_from_source(f"evolve_inprocess_evaluator_{len(helpers)}", request["path"],
                                                 request)
                    value = _evaluation_result(getattr(module, request["function"])(request["program_path"]))
                elif using:
                    if using not in helpers:
                        if request.get("source") is None:
                            raise LookupError(f"helper {using} was never sent")
                        helpers[using] = _module_from_source(f"evolve_stage_helper_{len(helpers)}", using, request)
                    value = getattr(helpers[using], request["entry"])(candidate, *args, **kwargs)
                else:
                    value = getattr(candidate, request["entry"])(*args, **kwargs)
                try:
                    reply = {"ok": True, "value": _encode(value, out)}
                except BaseException as exc:  # noqa: BLE001
                    out = []
                    reply = _error("encode", exc)
            except BaseException as exc:  # noqa: BLE001
                reply = _error("exception", exc)
        else:
            reply = {"ok": False, "kind": "protocol", "type": "ValueError", "message": f"unknown op {op!r}"}
        reply["id"] = request.get("id")
        try:
            data = _frame(reply, out)
        except BaseException as exc:  # noqa: BLE001
            data = _frame({**_error("encode", exc), "id": request.get("id")}, [])
        if len(data) > MAX_REPLY_BYTES:
            data = _frame({"ok": False, "kind": "encode", "type": "ValueError", "message": "reply too large",
                           "id": request.get("id")}, [])
        replies.write(data)
        replies.flush()


if __name__ == "__main__":
    main()
    # Leave at once at end of input, like the warm path: no atexit handlers or thread joins of the candidate.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(0)
