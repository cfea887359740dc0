"""evolve/channel.py: the wire format and the bounded reading of what a candidate sends."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from evolve.channel import (
    ReplyError,
    ReplyLimits,
    decode_value,
    encode_value,
    pack_arrays,
    parse_header,
    read_arrays,
    scan_json,
)

LIMITS = ReplyLimits(max_bytes=64 << 20, max_depth=50, max_containers=1000, max_values=10_000)


def test_arrays_round_trip_through_the_payload() -> None:
    sent = [np.arange(6, dtype=np.int16).reshape(2, 3), np.array([1.5, np.nan]), np.zeros((0, 4)),
            np.array([True, False]), np.arange(3, dtype=">f8"), np.ones(2, dtype=np.complex64)]
    arrays: list[np.ndarray] = []
    value = encode_value({"a": sent[0], "rest": tuple(sent[1:]), "n": np.float32(2.5)}, arrays)
    layout, parts = pack_arrays(arrays)
    payload = bytearray(b"".join(bytes(p) for p in parts))
    assert all(offset % 8 == 0 for _, _, offset in layout)
    got = decode_value(json.loads(json.dumps(value)), read_arrays(layout, payload))
    assert got["n"] == 2.5
    for before, after in zip(sent, [got["a"], *got["rest"]], strict=True):
        assert after.dtype == before.dtype and after.shape == before.shape
        assert np.array_equal(after, before, equal_nan=True)
    got["a"][0, 0] = 7  # arrays are writable copies of the payload, never views of trusted memory elsewhere


@pytest.mark.parametrize(("layout", "reason"), [
    ([["|O", [1], 0]], "not a numeric dtype"),
    ([["<U4", [1], 0]], "not a numeric dtype"),
    ([["<V8", [1], 0]], "not a numeric dtype"),
    ([["<f8", [4], 0]], "does not fit"),
    ([["<f8", [1], 8]], "does not fit"),
    ([["<f8", [-1], 0]], "shape"),
    ([["<f8", [1.0], 0]], "shape"),
    ([["<f8", [1] * 40, 0]], "shape"),
    ([["<f8", [1], -8]], "offset"),
    ([["<f8", [1]]], "descriptor"),
    ({"not": "a list"}, "not a list"),
])
def test_array_descriptors_are_checked_before_anything_is_built(layout, reason) -> None:
    with pytest.raises(ReplyError, match=reason):
        read_arrays(layout, bytearray(8))


def test_raw_booleans_are_normalised() -> None:
    (array,) = read_arrays([["|b1", [3], 0]], bytearray(b"\x00\x02\xff"))
    assert array.tolist() == [False, True, True] and array.view(np.uint8).tolist() == [0, 1, 1]


@pytest.mark.parametrize(("data", "reason"), [
    (b"[" * 60 + b"]" * 60, "nested more than 50 levels"),
    (b"[" + b"{}," * 2000 + b"{}]", "more than 1000 lists/dicts"),
    (b"[" + b"1," * 20_000 + b"1]", "values"),
])
def test_scan_refuses_deep_or_huge_json(data, reason) -> None:
    with pytest.raises(ReplyError, match=reason):
        scan_json(data, LIMITS)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"ok": True, "note": "[" * 5000 + '\\"{' * 100, "value": [[1, 2], {"a": "]]]"}]})
    scan_json(text.encode(), LIMITS)
    assert parse_header(text.encode(), LIMITS)["note"].startswith("[[[")


def test_scanning_hostile_strings_is_linear() -> None:
    """Unterminated strings and runs of escaped quotes must not make the string blanking quadratic."""
    loose = ReplyLimits(max_depth=10**7, max_containers=10**7, max_values=10**7)
    for data in (b'"' + b'\\"' * 1_000_000, b'"a' * 1_000_000, b'"' + b'\\"' * 1_000_000 + b"\\",
                 b'"[' * 1_000_000):
        start = time.process_time()
        scan_json(data, loose)
        assert time.process_time() - start < 5.0  # quadratic would be hours


@pytest.mark.parametrize("line", [b"not json", b"[1, 2]", b'"text"', b"{" * 10])
def test_parse_header_wants_one_json_object(line) -> None:
    with pytest.raises(ReplyError):
        parse_header(line, LIMITS)


def test_decode_refuses_missing_arrays_and_depth_without_recursing() -> None:
    with pytest.raises(ReplyError, match="missing array"):
        decode_value({"x": {"__array__": 3}}, [np.zeros(1)])
    with pytest.raises(ReplyError, match="missing array"):
        decode_value([{"__array__": "0"}], [np.zeros(1)])
    deep: list = []
    node = deep
    for _ in range(100_000):  # far past Python's recursion limit: an iterative walk only
        node.append([])
        node = node[0]
    with pytest.raises(ReplyError, match="nested more than"):
        decode_value(deep, max_depth=1000)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ReplyError, match="nested more than"):
        decode_value(cycle)


def test_a_dict_that_only_looks_like_a_reference_stays_data() -> None:
    value = decode_value({"a": {"__array__": 0, "other": 1}}, [np.zeros(1)])
    assert value == {"a": {"__array__": 0, "other": 1}}
