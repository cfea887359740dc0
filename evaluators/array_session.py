"""The trusted side of array problems: drive a candidate's array functions across the process boundary.

An ``ArraySession`` wraps a ``Candidate`` whose process runs ``evaluators/array_harness.py``. The trusted side keeps
everything that decides a score (task data, model, loss, gradients, loops, held-out tasks, clocks) and calls the
candidate's functions one step at a time, handing over only the arrays a step needs::

    session = ArraySession(candidate)                  # xp: NumPy, or CuPy on a GPU stage
    session.batch([RemoteCall("init_state", (params, 300, XP), keep="job0")])
    new_params, = session.batch([RemoteCall("step", (params, grads, Held("job0"), t, XP), keep="job0",
                                            split=True)])

Arrays cross as raw buffers over the harness's pipes (``evolve.channel``), or, when both sides run CuPy, through a
device buffer the trusted side allocated and shared with a CUDA IPC handle (``DeviceStaging``): the candidate gets
private copies of its inputs and its results are copied back into the trusted side's buffer, never pickled. What
comes back is data to validate: ``numeric_array`` refuses anything but a real numeric array of the expected shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluators.array_harness import ALIGN, HARNESS_PATH, is_device_array, select_array_module
from evolve.candidate import Candidate, WrongOutput
from evolve.channel import ARRAY_TAG, MAX_NDIM, ReplyError, check_descriptor


class _Xp:
    """Stands for the candidate's array module in a call's arguments."""

    def __repr__(self) -> str:
        return "XP"


XP = _Xp()
INTERRUPTED = type("Interrupted", (), {"__repr__": lambda self: "INTERRUPTED"})()


@dataclass(frozen=True)
class Held:
    """An object kept in the candidate's process under ``key`` (an optimizer state, a generator)."""

    key: str


@dataclass(frozen=True)
class RemoteCall:
    """One function of the candidate (or ``@rng``, ``@sizes``, ``@release``) with its arguments."""

    entry: str
    args: tuple[Any, ...] = ()
    keep: str | None = None
    split: bool = False
    cpu_budget: float | None = None


def numeric_array(value: Any, what: str, shape: tuple[int, ...] | None = None, xp: Any = np) -> Any:
    """``value`` as a float64 array of ``xp`` after checking it is a real numeric array (of ``shape``), or
    ``WrongOutput`` saying what was wrong. Non-finite values are left for the caller's scoring to judge."""
    if not isinstance(value, np.ndarray) and not is_device_array(value):
        raise WrongOutput(f"{what} is a {type(value).__name__}, not an array"
                          + (f" of shape {shape}" if shape is not None else ""))
    if value.dtype.kind not in "biuf":
        raise WrongOutput(f"{what} has dtype {value.dtype}: real numbers only")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise WrongOutput(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    return xp.asarray(value, dtype=xp.float64)


@dataclass
class _IpcBuffer:
    memory: Any
    handle: str
    size: int


@dataclass
class DeviceStaging:
    """Two device buffers shared with the candidate's process through CUDA IPC handles: arguments in, results out.

    Allocated with ``cudaMalloc`` directly (``cupy.cuda.Memory``, not the memory pool: an IPC handle names a whole
    allocation), grown by doubling. Inputs are copied in and the stream synchronised before the request is sent;
    results are copied out of the ``out`` buffer into private arrays after the reply, then validated.
    """

    cupy: Any
    candidate: Candidate
    buffers: dict[str, _IpcBuffer] = field(default_factory=dict)

    def _buffer(self, role: str, nbytes: int) -> _IpcBuffer:
        current = self.buffers.get(role)
        if current is None or current.size < nbytes:
            size = max(1 << 20, 2 * nbytes)
            memory = self.cupy.cuda.Memory(size)
            handle = self.cupy.cuda.runtime.ipcGetMemHandle(memory.ptr)
            current = self.buffers[role] = _IpcBuffer(memory, bytes(handle).hex(), size)
            # Freeing memory another process still maps is undefined behaviour: buffers (replaced ones included)
            # live until the candidate's processes are gone.
            self.candidate.keep_until_closed(current)
        return current

    def _view(self, buffer: _IpcBuffer, offset: int, dtype: Any, shape: tuple[int, ...]) -> Any:
        pointer = self.cupy.cuda.MemoryPointer(buffer.memory, offset)
        return self.cupy.ndarray(shape, dtype=dtype, memptr=pointer)

    def place(self, arrays: list[Any]) -> tuple[list[list[Any]], dict[str, Any]]:
        """Copy ``arrays`` into the ``in`` buffer; their descriptors and the staging description to send."""
        offsets, end = [], 0
        for array in arrays:
            start = end + (-end % ALIGN)
            offsets.append(start)
            end = start + array.nbytes
        inputs = self._buffer("in", end)
        outputs = self._buffer("out", end)
        descriptors = []
        for array, offset in zip(arrays, offsets, strict=True):
            self._view(inputs, offset, array.dtype, array.shape)[...] = array
            descriptors.append([offset, array.dtype.str, list(array.shape)])
        self.cupy.cuda.get_current_stream().synchronize()
        staging = {role: {"handle": b.handle, "bytes": b.size} for role, b in (("in", inputs), ("out", outputs))}
        return descriptors, staging

    def take(self, descriptor: Any) -> Any:
        """A private copy of a result the candidate wrote into the ``out`` buffer, after checking its descriptor."""
        buffer = self.buffers["out"]
        try:
            if not isinstance(descriptor, list) or len(descriptor) != 3:
                raise ReplyError("device array descriptor is not [offset, dtype, shape]")
            offset, dtype, shape = descriptor  # the harness's order (``_export``); the channel's is [dtype, shape, offset]
            dtype, shape, offset = check_descriptor([dtype, shape, offset], buffer.size)
        except ReplyError as exc:
            raise WrongOutput(f"malformed device array from the candidate: {exc}") from None
        array = self._view(buffer, offset, dtype, shape).copy()
        return array != 0 if dtype.kind == "b" else array


class ArraySession:
    """The trusted side's handle on the candidate's array functions (see the module docstring)."""

    def __init__(self, candidate: Candidate, gpu: bool | None = None):
        self.candidate = candidate
        self.gpu = candidate.gpus > 0 if gpu is None else gpu
        self.xp, self.xp_name = select_array_module(self.gpu)
        candidate.add_startup(HARNESS_PATH, "open", self.gpu)
        self._device = DeviceStaging(self.xp, candidate) if self.xp_name == "cupy" else None

    @property
    def remote_module(self) -> str:
        """The array module the candidate's process runs ("numpy", "cupy"; "?" before it started)."""
        return str(self.candidate.startup_values.get("open", "?"))

    def call(self, entry: str, *args: Any, keep: str | None = None, split: bool = False,
             cpu_budget: float | None = None, timeout: float | None = None) -> Any:
        return self.batch([RemoteCall(entry, args, keep, split, cpu_budget)], timeout=timeout)[0]

    def batch(self, calls: list[RemoteCall], timeout: float | None = None) -> list[Any]:
        """Run ``calls`` in order in one round trip; their results (``INTERRUPTED`` for an interrupted call)."""
        self.candidate.start()
        device = self._device if self.remote_module == "cupy" else None
        arrays: list[np.ndarray] = []
        staged: list[tuple[Any, dict[str, Any]]] = []  # device arguments and the placeholders that stand for them
        mapped = _mappable(calls)
        if mapped:
            encoded = [self._encode_map(calls, arrays, staged, device)]
        else:
            encoded = [{"entry": c.entry, "args": [self._encode(v, arrays, staged, device) for v in c.args],
                        "keep": c.keep, "split": c.split, "cpu_budget": c.cpu_budget} for c in calls]
        staging = None
        if device is not None and staged:
            descriptors, staging = device.place([array for array, _ in staged])
            for (_, placeholder), descriptor in zip(staged, descriptors, strict=True):
                placeholder["__device__"] = descriptor  # in place: no second walk of the request
        value = self.candidate.call_encoded("run", [encoded, staging], arrays, using=HARNESS_PATH, timeout=timeout)
        if not isinstance(value, list) or len(value) != len(encoded):
            raise WrongOutput(f"the array harness answered {len(encoded)} requests with "
                              f"{len(value) if isinstance(value, list) else type(value).__name__}")
        if mapped:
            value = self._unpacked(self._decode(value[0], device), len(calls))
        return [self._decode(v, device) for v in value]

    def _encode_map(self, calls: list[RemoteCall], arrays: list[np.ndarray], staged: list[tuple[Any, dict[str, Any]]],
                    device: DeviceStaging | None) -> dict[str, Any]:
        """Calls of one function as columns: one value for all, one packed array, or one value per call."""
        columns = []
        for position in range(len(calls[0].args)):
            values = [c.args[position] for c in calls]
            first = values[0]
            if all(v is first for v in values) and (first is XP or type(first) in (int, float, str, bool)):
                columns.append({"same": self._encode(first, arrays, staged, device)})
            elif (shapes := _list_shapes(values)) is not None:
                flat = self.xp.concatenate([a.reshape(-1) for v in values for a in v])
                columns.append({"pack": [self._encode(flat, arrays, staged, device), shapes]})
            else:
                columns.append({"each": [self._encode(v, arrays, staged, device) for v in values]})
        first_call = calls[0]
        return {"entry": first_call.entry, "count": len(calls), "columns": columns, "keeps": [c.keep for c in calls],
                "split": first_call.split, "cpu_budget": first_call.cpu_budget}

    @staticmethod
    def _unpacked(value: Any, count: int) -> list[Any]:
        """The results of a mapped call: a list as sent, or ``{"__packed__": [flat, shapes]}`` cut into lists of
        views of ``flat`` (after checking that the shapes add up to it exactly)."""
        if isinstance(value, list) and len(value) == count:
            return value
        packed = value.get("__packed__") if isinstance(value, dict) and len(value) == 1 else None
        if not isinstance(packed, list) or len(packed) != 2:
            raise WrongOutput(f"the array harness answered {count} calls with malformed data")
        flat, shapes = packed
        if not (isinstance(flat, np.ndarray) or is_device_array(flat)) or flat.ndim != 1 or \
                not isinstance(shapes, list) or len(shapes) != count:
            raise WrongOutput(f"the array harness answered {count} calls with a malformed packed array")
        out, start = [], 0
        for item in shapes:
            if not isinstance(item, list):
                raise WrongOutput("malformed packed array shapes from the candidate")
            arrays = []
            for shape in item:
                if not isinstance(shape, list) or len(shape) > MAX_NDIM or \
                        not all(type(d) is int and d >= 0 for d in shape):
                    raise WrongOutput("malformed packed array shapes from the candidate")
                size = math.prod(shape)
                if start + size > flat.size:
                    raise WrongOutput("packed arrays from the candidate do not add up to their buffer")
                arrays.append(flat[start:start + size].reshape(shape))
                start += size
            out.append(arrays)
        if start != flat.size:
            raise WrongOutput("packed arrays from the candidate do not add up to their buffer")
        return out

    def _encode(self, value: Any, arrays: list[np.ndarray], staged: list[tuple[Any, dict[str, Any]]],
                device: DeviceStaging | None) -> Any:
        """One walk from trusted arguments to JSON data: arrays by reference, markers as tagged dicts, device arrays
        as placeholders ``batch`` fills with their descriptors once ``place`` has put them in the buffer."""
        kind = type(value)
        if kind is np.ndarray:
            arrays.append(value)
            return {ARRAY_TAG: len(arrays) - 1}
        if kind is list:
            return [self._encode(v, arrays, staged, device) for v in value]
        if value is None or kind in (int, float, str, bool):
            return value
        if value is XP:
            return {"__xp__": 1}
        if kind is Held:
            return {"__held__": value.key}
        if kind is tuple:
            return {"__tuple__": [self._encode(v, arrays, staged, device) for v in value]}
        if isinstance(value, dict):
            return {str(k): self._encode(v, arrays, staged, device) for k, v in value.items()}
        if is_device_array(value):
            if device is not None:
                placeholder: dict[str, Any] = {"__device__": None}
                staged.append((value, placeholder))
                return placeholder
            return self._encode(value.get(), arrays, staged, device)
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return self._encode(np.asarray(value), arrays, staged, device)
        raise TypeError(f"cannot send a {kind.__name__} to the candidate")

    @staticmethod
    def _decode(value: Any, device: DeviceStaging | None) -> Any:
        if isinstance(value, dict) and value == {"__interrupted__": True}:
            return INTERRUPTED
        if device is None:
            return value
        stack: list[tuple[Any, Any]] = [([value], 0)]
        root = stack[0][0]
        while stack:
            container, key = stack.pop()
            item = container[key]
            if isinstance(item, list):
                stack.extend((item, i) for i in range(len(item)))
            elif isinstance(item, dict):
                if "__device__" in item and len(item) == 1:
                    container[key] = device.take(item["__device__"])
                else:
                    stack.extend((item, k) for k in item)
        return root[0]


def _mappable(calls: list[RemoteCall]) -> bool:
    """Several calls of one function with the same options and argument count: sent as one mapped call."""
    if len(calls) < 2:
        return False
    first = calls[0]
    return all(c.entry == first.entry and c.split == first.split and c.cpu_budget == first.cpu_budget
               and len(c.args) == len(first.args) for c in calls)


def _list_shapes(values: list[Any]) -> list[list[list[int]]] | None:
    """Shapes when every value is a non-empty list of arrays (host, or all on the device) of one dtype."""
    if not all(isinstance(v, list) and v for v in values):
        return None
    first = values[0][0]
    if not (isinstance(first, np.ndarray) or is_device_array(first)):
        return None
    kind = type(first)
    if not all(type(a) is kind and a.dtype == first.dtype for v in values for a in v):
        return None
    return [[list(a.shape) for a in v] for v in values]
