"""The wire format between the trusted side and a sandboxed harness, and its bounded reading on the trusted side.

One message is a JSON header line followed by a binary payload::

    {"op": ..., "id": ..., "arrays": [[dtype, shape, offset], ...], "nbytes": N}\\n<N bytes>

Arrays travel as raw little buffers in the payload (8-byte aligned), referenced in the JSON data as
``{"__array__": i}``: no pickle, no per-element JSON, and a 300-step training loop costs microseconds per step.
``nbytes`` and ``arrays`` are absent when there is no payload, so a message without arrays is one JSON line.

Everything a candidate sends is hostile input. Before ``json.loads`` materialises anything, ``scan_json`` counts
the header's containers and values and measures its nesting depth with string literals blanked out, all in linear
time with C-speed primitives, and refuses a header past ``ReplyLimits``: a few megabytes of ``{}`` or ``[[[[...``
cost the trusted side a few megabytes of bytes, never gigabytes of objects or a ``RecursionError``. Array
descriptors are checked (numeric dtypes only, sizes within the payload) before any array is built, and decoding
walks the data with an explicit stack.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

ALIGN = 8
ARRAY_KINDS = "biufc"  # bool, int, uint, float, complex: no object, string, void or datetime arrays
MAX_NDIM = 32
DEFAULT_MAX_DEPTH = 100
DEFAULT_MAX_CONTAINERS = 100_000  # lists and dicts in one reply (a dict costs the trusted side ~100-200 bytes)
DEFAULT_MAX_VALUES = 1_000_000  # scalars and strings in one reply
ARRAY_TAG = "__array__"

# A JSON string literal (or an unterminated one running to the end: it always matches from a quote and never
# backtracks, so scanning is linear even on hostile input), or a bracket.
_TOKEN = re.compile(rb'"[^"\\]*+(?:\\[\s\S]?[^"\\]*+)*+(?:"|\Z)|[\[\]{}]')
_QUOTE, _OPENERS = ord('"'), (ord("["), ord("{"))
_DTYPE = re.compile(r"[<>|=]?[biufc](?:1|2|4|8|16)")


class ReplyError(ValueError):
    """A message from the sandbox is malformed or exceeds a limit (always the candidate's doing)."""


@dataclass(frozen=True)
class ReplyLimits:
    """What the trusted side accepts in one reply before parsing it.

    max_bytes: header line plus payload (``[sandbox] max_reply_mb``).
    max_depth: nesting of lists and dicts in the header (``[sandbox] max_reply_depth``).
    max_containers / max_values: lists and dicts / scalars and strings in the header; they bound the memory the
        trusted side spends materialising it (arrays travel in the payload and are not counted here).
    """

    max_bytes: int = 8 << 20
    max_depth: int = DEFAULT_MAX_DEPTH
    max_containers: int = DEFAULT_MAX_CONTAINERS
    max_values: int = DEFAULT_MAX_VALUES


def scan_json(data: bytes | bytearray, limits: ReplyLimits) -> None:
    """Refuse ``data`` (raise ``ReplyError``) when its JSON would be too deep or too large to materialise.

    Raw counts of brackets and separators bound the answer from above; only when they exceed a limit are string
    literals told apart (a bracket inside a string is no container), token by token, stopping as soon as a limit
    is passed: a few hundred milliseconds at worst, and no copy of the data. Exact for valid JSON; for invalid
    JSON the counts are whatever they are and ``json.loads`` refuses it next.
    """
    containers = data.count(b"[") + data.count(b"{")
    separators = data.count(b",") + data.count(b":")
    if containers <= limits.max_depth and containers <= limits.max_containers and \
            separators + containers <= limits.max_values:
        return
    containers = depth = strings = 0
    for match in _TOKEN.finditer(data):
        start = match.start()
        first = data[start]
        if first == _QUOTE:
            strings += 1
            if strings > limits.max_values:
                raise ReplyError(f"reply has more than {limits.max_values} strings")
            end = match.end()
            separators -= data.count(b",", start, end) + data.count(b":", start, end)
        elif first in _OPENERS:
            containers += 1
            depth += 1
            if containers > limits.max_containers:
                raise ReplyError(f"reply has more than {limits.max_containers} lists/dicts")
            if depth > limits.max_depth:
                raise ReplyError(f"reply nested more than {limits.max_depth} levels deep")
        else:
            depth -= 1
    if separators + containers > limits.max_values:
        raise ReplyError(f"reply has about {separators + containers} values, more than {limits.max_values}")


def parse_header(line: bytes, limits: ReplyLimits) -> dict[str, Any]:
    """One header line to a dict, after ``scan_json``; ``ReplyError`` for anything else."""
    scan_json(line, limits)
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError cannot happen below the depth cap; belt and braces
        raise ReplyError(f"reply is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise ReplyError("reply is not a JSON object")
    return value


# ------------------------------------------------------------------------------------------------ encoding


def encode_value(value: Any, arrays: list[np.ndarray] | None = None) -> Any:
    """Trusted data to JSON data. With ``arrays``, numpy arrays are appended there and referenced by index;
    without, they become nested lists. Numpy scalars become Python numbers, tuples lists, dict keys strings."""
    if isinstance(value, np.ndarray):
        if arrays is None:
            return value.tolist()
        arrays.append(value)
        return {ARRAY_TAG: len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [encode_value(v, arrays) for v in value]
    if isinstance(value, dict):
        return {str(k): encode_value(v, arrays) for k, v in value.items()}
    return value


def pack_arrays(arrays: list[Any]) -> tuple[list[list[Any]], list[bytes | memoryview]]:
    """The arrays' descriptors (``[dtype, shape, offset]``, 8-byte aligned offsets) and the payload's buffers (the
    arrays' own memory where contiguous: nothing is copied before ``writev``)."""
    layout: list[list[Any]] = []
    parts: list[bytes | memoryview] = []
    offset = 0
    for array in arrays:
        data = np.ascontiguousarray(array)
        pad = -offset % ALIGN
        if pad:
            parts.append(bytes(pad))
            offset += pad
        layout.append([data.dtype.str, list(data.shape), offset])
        if data.nbytes:
            parts.append(memoryview(data).cast("B"))
        offset += data.nbytes
    return layout, parts


# ------------------------------------------------------------------------------------------------ decoding


def _dtype(text: Any) -> np.dtype:
    if not isinstance(text, str) or not _DTYPE.fullmatch(text):
        raise ReplyError(f"array dtype {str(text)[:40]!r} is not a numeric dtype")
    dtype = np.dtype(text)
    if dtype.kind not in ARRAY_KINDS:
        raise ReplyError(f"array dtype {dtype} is not numeric")
    return dtype


def check_descriptor(entry: Any, size: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """An array descriptor ``[dtype, shape, offset]`` checked against a buffer of ``size`` bytes."""
    if not isinstance(entry, list) or len(entry) != 3:
        raise ReplyError("array descriptor is not [dtype, shape, offset]")
    dtype, shape, offset = _dtype(entry[0]), entry[1], entry[2]
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise ReplyError(f"array shape {str(shape)[:80]} is not a list of at most {MAX_NDIM} sizes")
    if type(offset) is not int or offset < 0:
        raise ReplyError("array offset is not a non-negative integer")
    if offset + math.prod(shape) * dtype.itemsize > size:
        raise ReplyError(f"array of shape {tuple(shape)} ({dtype}) does not fit in the {size}-byte buffer")
    return dtype, tuple(shape), offset


def read_arrays(layout: Any, payload: bytearray | bytes) -> list[np.ndarray]:
    """Validate the arrays' descriptors against the payload and build them (writable when ``payload`` is a
    bytearray; bool arrays normalised to 0/1 bytes)."""
    if layout is None:
        return []
    if not isinstance(layout, list):
        raise ReplyError("array layout is not a list")
    arrays = []
    for entry in layout:
        dtype, shape, offset = check_descriptor(entry, len(payload))
        count = math.prod(shape)
        if count == 0:
            array = np.zeros(shape, dtype=dtype)
        else:
            array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
        if dtype.kind == "b":
            array = array.view(np.uint8) != 0  # raw bytes other than 0/1 must not make odd booleans
        arrays.append(array)
    return arrays


def decode_value(value: Any, arrays: list[np.ndarray] | tuple[np.ndarray, ...] = (),
                 max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Replace ``{"__array__": i}`` references by ``arrays[i]``, iteratively (no recursion), in place.

    ``value`` is fresh data from ``json.loads``; anything else (a reference to a missing array, nesting deeper
    than ``max_depth``, which also stops cycles) raises ``ReplyError``.
    """
    if not isinstance(value, list | dict):
        return value
    root = [value]
    stack: list[tuple[Any, Any, int]] = [(root, 0, 0)]
    while stack:
        container, key, depth = stack.pop()
        item = container[key]
        if type(item) is dict and ARRAY_TAG in item and len(item) == 1:
            index = item[ARRAY_TAG]
            if type(index) is not int or not 0 <= index < len(arrays):
                raise ReplyError(f"reference to a missing array {str(index)[:20]}")
            container[key] = arrays[index]
            continue
        if depth >= max_depth:
            raise ReplyError(f"data nested more than {max_depth} levels deep")
        children = enumerate(item) if isinstance(item, list) else item.items()
        stack.extend((item, k, depth + 1) for k, v in children if isinstance(v, list | dict))
    return root[0]
