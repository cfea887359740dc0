"""The sandbox side of array problems: runs in the candidate's process, holds only what the candidate may see.

Loaded by ``python_harness.py`` (its source sent by the trusted side, ``evaluators/array_session.py``), it serves
calls that the trusted side drives one at a time: the trusted process keeps the task data, the model, the loss and
its gradients, the loop, the held-out tasks and every clock, and asks this process to run one candidate function
on the arrays it hands over. Between calls, objects the candidate must keep (an optimizer's state, a seeded
generator) stay here, keyed by handles the trusted side chose. Nothing this side returns is trusted: the trusted
side validates every array it receives.

* ``open(None, gpu)`` (a start-up call, before the candidate is imported): picks the array module ``xp``, CuPy when
  the stage has a GPU and CuPy sees a device, NumPy otherwise, so the same candidate code runs on both.
* ``run(candidate, calls, staging)``: each call is ``{"entry", "args", "keep", "split", "cpu_budget"}`` (or the
  same function over many argument lists, sent column by column: ``_mapped``, one round trip per training step
  for all jobs with their arrays in a single buffer). In
  ``args``, ``{"__xp__": 1}`` becomes ``xp``, ``{"__held__": key}`` the object held under ``key``,
  ``{"__tuple__": [...]}`` a tuple, a NumPy array an ``xp`` array, ``{"__device__": [offset, dtype, shape]}`` a
  copy of a region of the trusted side's CUDA IPC buffer. ``keep`` holds the result under a key (with ``split``,
  the result must be ``(sent, kept)``: ``kept`` is held, ``sent`` returned). ``cpu_budget`` arms a ``SIGPROF``
  timer that interrupts the call after that much CPU of this process: a courtesy that spares an honest search
  its process; the budget itself is enforced by the trusted side, which watches the whole tree's CPU and kills
  it. Entries starting with ``@`` are the harness's own: ``@rng`` (a seeded generator), ``@sizes`` (element counts
  of the arrays in a held object), ``@release``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

HARNESS_PATH = Path(__file__).resolve()
INTERRUPTED = {"__interrupted__": True}
ALIGN = 256  # device offsets: CuPy kernels like aligned pointers
MAX_WALK_DEPTH = 20

_state: dict[str, Any] = {"xp": None, "name": "", "held": {}, "ipc": {}}


def select_array_module(gpu: bool) -> tuple[Any, str]:
    """CuPy when a GPU was assigned and CuPy sees a device; NumPy otherwise (same candidate code either way)."""
    if gpu:
        try:
            import cupy  # type: ignore[import-not-found]

            if cupy.cuda.runtime.getDeviceCount() > 0:
                return cupy, "cupy"
        except Exception:  # noqa: BLE001 - no CuPy, no driver or no device: fall back to the CPU
            pass
    import numpy

    return numpy, "numpy"


def make_rng(xp: Any, seed: int) -> Any:
    """A seeded Generator of the array module (``random``, ``standard_normal``, ``integers`` exist on both)."""
    return xp.random.default_rng(seed)


def is_device_array(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "cupy" and hasattr(value, "get")


def to_host(value: Any) -> Any:
    """Device arrays to NumPy, recursively; everything else unchanged."""
    if isinstance(value, list | tuple):
        return [to_host(v) for v in value]
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    if is_device_array(value):
        return value.get()
    return value


def open(candidate: Any, gpu: bool) -> str:  # noqa: A001 - the name of the request, not the builtin
    xp, name = select_array_module(bool(gpu))
    _state.update(xp=xp, name=name)
    return name


# ------------------------------------------------------------------------------------------------ calls


class BudgetSpent(BaseException):
    """Raised inside a call whose CPU budget ran out (a BaseException, so ``except Exception`` does not eat it)."""


_process_time = time.process_time  # taken before the candidate is imported: patching ``time`` does not reach it
_budget_end = [0.0]


def _interrupt(signum: int, frame: Any) -> None:
    # The profiling timer is charged by ticks, which runs early on a busy machine: re-arm until the precise clock
    # agrees that the budget is spent.
    left = _budget_end[0] - _process_time()
    if left > 0.002:
        signal.setitimer(signal.ITIMER_PROF, left)
        return
    raise BudgetSpent


def _within_cpu(budget: float, function: Any, args: list[Any]) -> Any:
    previous = signal.signal(signal.SIGPROF, _interrupt)
    _budget_end[0] = _process_time() + budget
    signal.setitimer(signal.ITIMER_PROF, max(budget, 1e-3))
    try:
        return function(*args)
    except BudgetSpent:
        return INTERRUPTED
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _sizes(value: Any, depth: int = 0) -> list[int]:
    """Element counts of the arrays inside lists, tuples and dicts (what ``state_buffers`` measures)."""
    if depth > MAX_WALK_DEPTH:
        return []
    if isinstance(value, list | tuple):
        return [n for v in value for n in _sizes(v, depth + 1)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _sizes(v, depth + 1)]
    if hasattr(value, "shape") and hasattr(value, "size"):
        return [int(value.size)]
    return []


def _argument(value: Any, xp: Any, device_in: Any) -> Any:
    if isinstance(value, list):
        return [_argument(v, xp, device_in) for v in value]
    if isinstance(value, dict):
        if value.get("__xp__") == 1 and len(value) == 1:
            return xp
        if "__held__" in value and len(value) == 1:
            return _state["held"][value["__held__"]]
        if "__tuple__" in value and len(value) == 1:
            return tuple(_argument(v, xp, device_in) for v in value["__tuple__"])
        if "__device__" in value and len(value) == 1:
            offset, dtype, shape = value["__device__"]
            return _device_view(device_in, offset, dtype, shape).copy()  # the candidate keeps private copies
        return {k: _argument(v, xp, device_in) for k, v in value.items()}
    if hasattr(value, "__array_interface__") and xp.__name__ != "numpy":
        return xp.asarray(value)
    return value


def _one(candidate: Any, xp: Any, call: dict[str, Any], device_in: Any, args: list[Any] | None = None) -> Any:
    entry = call["entry"]
    if args is None:
        args = _argument(call.get("args", []), xp, device_in)
    held = _state["held"]
    if entry == "@release":
        held.pop(args[0], None)
        return None
    if entry == "@sizes":
        return _sizes(held.get(args[0]))
    function = (lambda seed: make_rng(xp, seed)) if entry == "@rng" else getattr(candidate, entry)
    budget = call.get("cpu_budget")
    value = _within_cpu(float(budget), function, args) if budget is not None else function(*args)
    if value is INTERRUPTED:
        return value
    keep = call.get("keep")
    if keep is not None and call.get("split"):
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise TypeError(f"{entry}() must return a pair (a result, and what to keep for the next call)")
        value, held[keep] = value
    elif keep is not None:
        held[keep], value = value, None
    return value


def _unpack(flat: Any, shapes: list[list[list[int]]]) -> list[list[Any]]:
    """Views of ``flat`` cut in order into lists of arrays of the given shapes."""
    out, start = [], 0
    for item in shapes:
        arrays = []
        for shape in item:
            size = 1
            for d in shape:
                size *= d
            arrays.append(flat[start:start + size].reshape(shape))
            start += size
        out.append(arrays)
    return out


def _mapped(candidate: Any, xp: Any, call: dict[str, Any], device_in: Any) -> Any:
    """The same function over ``count`` argument lists sent column by column (``same``: one value for all;
    ``pack``: lists of arrays in one flat array; ``each``: one value per call). Results that are all lists of
    arrays of one dtype come back packed the same way: ``{"__packed__": [flat, shapes]}``."""
    count = call["count"]
    per_call: list[list[Any]] = [[] for _ in range(count)]
    for column in call["columns"]:
        if "same" in column:
            value = _argument(column["same"], xp, device_in)
            for args in per_call:
                args.append(value)
        elif "pack" in column:
            flat, shapes = column["pack"]
            for args, arrays in zip(per_call, _unpack(_argument(flat, xp, device_in), shapes), strict=True):
                args.append(arrays)
        else:
            for args, value in zip(per_call, column["each"], strict=True):
                args.append(_argument(value, xp, device_in))
    keeps = call.get("keeps") or [None] * count
    results = [_one(candidate, xp, {**call, "keep": keep}, device_in, args)
               for args, keep in zip(per_call, keeps, strict=True)]
    arrays = [a for r in results if isinstance(r, list | tuple) for a in r]
    uniform = all(isinstance(r, list | tuple) and r for r in results) and \
        all(type(a) is type(arrays[0]) and hasattr(a, "shape") and a.dtype == arrays[0].dtype for a in arrays)
    if not uniform:
        return results
    flat = xp.concatenate([a.reshape(-1) for a in arrays])
    return {"__packed__": [flat, [[list(a.shape) for a in r] for r in results]]}


def run(candidate: Any, calls: list[dict[str, Any]], staging: dict[str, Any] | None = None) -> list[Any]:
    """Run ``calls`` in order with the candidate's functions; the results, as host or device-buffer data."""
    if _state["xp"] is None:
        open(candidate, False)
    xp = _state["xp"]
    device_in = device_out = None
    if staging:
        device_in, device_out = _ipc_buffer(staging["in"]), _ipc_buffer(staging["out"])
    results = [_mapped(candidate, xp, call, device_in) if "columns" in call else _one(candidate, xp, call, device_in)
               for call in calls]
    if device_out is not None:
        cursor = [0]
        results = [_export(value, device_out, cursor) for value in results]
        xp.cuda.get_current_stream().synchronize()
    return to_host(results) if xp.__name__ != "numpy" else results


# ------------------------------------------------------------------------------------------------ CUDA IPC


def _ipc_buffer(description: dict[str, Any]) -> Any:
    """The trusted side's device buffer (``cudaIpcOpenMemHandle`` on its handle), opened once per handle."""
    import cupy

    handle = bytes.fromhex(description["handle"])
    opened = _state["ipc"]
    if handle not in opened:
        ptr = cupy.cuda.runtime.ipcOpenMemHandle(handle)
        opened[handle] = cupy.cuda.UnownedMemory(ptr, int(description["bytes"]), owner=None)
    return opened[handle]


def _device_view(memory: Any, offset: int, dtype: str, shape: list[int]) -> Any:
    import cupy

    return cupy.ndarray(tuple(shape), dtype=dtype, memptr=cupy.cuda.MemoryPointer(memory, int(offset)))


def _export(value: Any, memory: Any, cursor: list[int]) -> Any:
    """Device arrays in a result copied into the trusted side's out buffer where they fit (host copies if not)."""
    if isinstance(value, list | tuple):
        return [_export(v, memory, cursor) for v in value]
    if isinstance(value, dict):
        return {k: _export(v, memory, cursor) for k, v in value.items()}
    if not is_device_array(value) or value.dtype.kind not in "biuf":
        return value
    offset = cursor[0] + (-cursor[0] % ALIGN)
    if offset + value.nbytes > memory.size:
        return value
    _device_view(memory, offset, value.dtype.str, list(value.shape))[...] = value
    cursor[0] = offset + value.nbytes
    return {"__device__": [offset, value.dtype.str, list(value.shape)]}
