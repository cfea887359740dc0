"""The array problems' two halves: the lint, the sandbox side (evaluators/array_harness.py) and the trusted session
(evaluators/array_session.py) driving a candidate's functions across the process boundary."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from evaluators.array_harness import HARNESS_PATH, make_rng, select_array_module, to_host
from evaluators.array_lint import ALLOWED_IMPORTS, check_source
from evaluators.array_session import (
    INTERRUPTED,
    XP,
    ArraySession,
    DeviceStaging,
    Held,
    RemoteCall,
    numeric_array,
)
from evolve.candidate import Candidate, CandidateFailure, WrongOutput
from evolve.problem import Limits
from evolve.sandbox import make_sandbox
from evolve.types import Status

from .conftest import PROBLEMS, has_gpu


@pytest.fixture(scope="module")
def sandbox():
    return make_sandbox(Limits(memory_mb=1024))


def session_for(sandbox, code: str) -> tuple[Candidate, ArraySession]:
    candidate = Candidate(textwrap.dedent(code), "array", "test", 30.0, 1, sandbox)
    return candidate, ArraySession(candidate)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy as np\n", "use the array module passed as the `xp` argument"),
        ("import numpy.linalg\n", "must not import numpy/cupy"),
        ("from cupy import asarray\n", "must not import numpy/cupy"),
        ("import cupyx.scipy\n", "must not import numpy/cupy"),
        ("import os\n", "imports os: only"),
        ("import sys\nframe = sys._getframe(1)\n", "imports sys"),
        ("from . import sibling\n", "relative imports"),
        ("x = eval('1 + 1')\n", "uses 'eval'"),
        ("y = getattr(object, 'mro')\n", "uses 'getattr'"),
        ("z = __import__('os')\n", "uses '__import__'"),
        ("g = globals()\n", "uses 'globals'"),
        ("def f():\n    return f.__globals__\n", "'__globals__'"),
        ("def f(g):\n    return g.gi_frame.f_back\n", "'gi_frame'"),
        ("def f(xp):\n    return xp.ctypeslib\n", "'ctypeslib'"),
        ("def f(xp):\n    return xp.load('x.npy', allow_pickle=True)\n", "'load'"),
        ("s = '{0.__class__}'.format(1)\n", "dunder"),
        ("s = '{0.gi_frame.f_back}'.format(g)\n", "refused names"),
        ("import operator\n", "imports operator: only"),
        ("import typing\n", "imports typing: only"),
        ("def broken(:\n", "syntax error"),
    ],
)
def test_check_source_refuses_with_a_reason(source: str, expected: str) -> None:
    reasons = check_source(source)
    assert reasons, f"accepted: {source!r}"
    assert any(expected in reason for reason in reasons), reasons


def test_check_source_accepts_plain_array_code() -> None:
    source = (
        '"""Load the state, open a new step: ordinary words in docstrings are fine."""\n'
        "import math\nimport time\nfrom functools import reduce\n\n"
        "def step(params, grads, state, t, xp):\n"
        "    scale = math.sqrt(t)\n"
        "    return [p - g / scale for p, g in zip(params, grads)], state\n"
    )
    assert check_source(source) == []
    assert "math" in ALLOWED_IMPORTS and "numpy" not in ALLOWED_IMPORTS


@pytest.mark.parametrize("path", [
    "optimizer/initial_program.py", "optimizer/baselines/momentum.py", "optimizer/baselines/adam.py",
    "tensor_rank/initial_program.py",
])
def test_shipped_programs_pass_the_check(path: str) -> None:
    assert check_source((PROBLEMS / path).read_text()) == []


def test_numpy_when_no_gpu_is_asked_for() -> None:
    xp, name = select_array_module(False)
    assert xp is np and name == "numpy"


@pytest.mark.skipif(has_gpu(), reason="this host has a usable GPU")
def test_gpu_request_falls_back_to_numpy_without_a_device() -> None:
    xp, name = select_array_module(True)
    assert xp is np and name == "numpy"


@pytest.mark.gpu
def test_gpu_request_gives_cupy_and_host_results() -> None:
    xp, name = select_array_module(True)
    assert name == "cupy"
    host = to_host({"a": [xp.arange(3)]})
    assert isinstance(host["a"][0], np.ndarray) and host["a"][0].tolist() == [0, 1, 2]


def test_make_rng_is_seeded() -> None:
    a, b = make_rng(np, 5), make_rng(np, 5)
    assert np.array_equal(a.standard_normal(4), b.standard_normal(4))


def test_harness_path_points_at_the_sandbox_side() -> None:
    assert HARNESS_PATH.name == "array_harness.py" and HARNESS_PATH.is_file()


STATEFUL = """
    calls = []

    def init_state(params, total_steps, xp):
        calls.append("init")
        return {"count": 0, "velocity": [xp.zeros_like(p) for p in params]}

    def step(params, grads, state, t, xp):
        state["count"] += 1
        return [p - 0.5 * g for p, g in zip(params, grads)], state

    def describe(shape, held, xp):
        return {"shape_type": type(shape).__name__, "module": xp.__name__, "count": held["count"]}
"""


def test_state_stays_in_the_candidate_process_between_calls(sandbox) -> None:
    candidate, session = session_for(sandbox, STATEFUL)
    with candidate:
        params = [np.ones(3), np.zeros((2, 2))]
        session.batch([RemoteCall("init_state", (params, 10, XP), keep="job")])
        for t in (1, 2, 3):
            (new,) = session.batch([RemoteCall("step", (params, params, Held("job"), t, XP), keep="job", split=True)])
            assert [a.shape for a in new] == [(3,), (2, 2)]
            params = new
        info = session.call("describe", (2, 3), Held("job"), XP)
        sizes = session.call("@sizes", "job")
    assert np.allclose(params[0], 0.125)
    assert info == {"shape_type": "tuple", "module": "numpy", "count": 3}
    assert sorted(sizes) == [3, 4]  # the two velocity buffers; the counter is not an array
    assert session.remote_module == "numpy"


def test_many_calls_of_one_function_travel_packed_and_come_back_split(sandbox) -> None:
    candidate, session = session_for(sandbox, STATEFUL)
    rng = np.random.default_rng(0)
    jobs = [[rng.standard_normal((n,)), rng.standard_normal((n, 2))] for n in (1, 4, 7)]
    with candidate:
        session.batch([RemoteCall("init_state", (p, 5, XP), keep=f"j{i}") for i, p in enumerate(jobs)])
        out = session.batch([RemoteCall("step", (p, p, Held(f"j{i}"), 1, XP), keep=f"j{i}", split=True)
                             for i, p in enumerate(jobs)])
    for before, after in zip(jobs, out, strict=True):
        assert [a.shape for a in after] == [a.shape for a in before]
        assert all(np.array_equal(b * 0.5, a) for a, b in zip(after, before, strict=True))


def test_a_cpu_budget_interrupts_a_call_without_killing_the_process(sandbox) -> None:
    code = "def spin(xp):\n    while True:\n        pass\n\ndef alive():\n    return 'yes'\n"
    candidate, session = session_for(sandbox, code)
    with candidate:
        assert session.call("spin", XP, cpu_budget=0.2) is INTERRUPTED
        assert session.call("alive") == "yes"


def test_numeric_array_refuses_what_is_not_a_real_array() -> None:
    assert numeric_array(np.arange(3), "x", (3,)).dtype == np.float64
    with pytest.raises(WrongOutput, match="not an array"):
        numeric_array([1.0, 2.0], "x")
    with pytest.raises(WrongOutput, match="real numbers"):
        numeric_array(np.ones(2, dtype=complex), "x")
    with pytest.raises(WrongOutput, match="shape"):
        numeric_array(np.ones(2), "x", (3,))


def test_an_exception_in_the_candidate_is_a_runtime_error(sandbox) -> None:
    candidate, session = session_for(sandbox, "def step(xp):\n    raise ValueError('bad step')\n")
    with candidate, pytest.raises(CandidateFailure) as info:
        session.call("step", XP)
    assert info.value.status is Status.RUNTIME_ERROR and "bad step" in str(info.value)


class _FakeDeviceArray(np.ndarray):
    """A host array ``is_device_array`` takes for a CuPy one (module and ``get``): the device path's bookkeeping
    runs here without a GPU."""

    __module__ = "cupy.fake"

    def get(self) -> np.ndarray:
        return np.array(self)


class _FakeMemory:
    def __init__(self, size: int):
        self.buf, self.ptr = bytearray(size), id(self)


FAKE_CUPY = SimpleNamespace(
    cuda=SimpleNamespace(Memory=_FakeMemory, MemoryPointer=lambda memory, offset: (memory, offset),
                         runtime=SimpleNamespace(ipcGetMemHandle=lambda ptr: ptr.to_bytes(8, "little")),
                         get_current_stream=lambda: SimpleNamespace(synchronize=lambda: None)),
    ndarray=lambda shape, dtype, memptr: np.ndarray(shape, dtype, memptr[0].buf, memptr[1]).view(_FakeDeviceArray),
    concatenate=lambda arrays: np.concatenate(arrays).view(_FakeDeviceArray),
)


class _FakeHarness:
    """Both processes on the fake device: doubles each staged argument (read from the ``in`` buffer), writes the
    results into the ``out`` buffer and answers with their descriptors, as ``array_harness._export`` does."""

    startup_values = {"open": "cupy"}

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.staging: DeviceStaging | None = None

    def start(self) -> None:
        pass

    def keep_until_closed(self, resource: Any) -> None:
        pass

    def call_encoded(self, entry: str, args: list[Any], arrays: list[Any], **_: Any) -> list[Any]:
        encoded, _ = args
        self.requests.append(encoded)
        buffers = self.staging.buffers
        cursor, out = 0, []
        for request in encoded:
            packed = request["columns"][0]["pack"] if "columns" in request else None  # a mapped call
            offset, dtype, shape = (packed[0] if packed else request["args"][0])["__device__"]
            value = np.ndarray(shape, dtype, buffers["in"].memory.buf, offset) * 2
            np.ndarray(shape, dtype, buffers["out"].memory.buf, cursor)[...] = value
            result = {"__device__": [cursor, value.dtype.str, list(value.shape)]}
            out.append({"__packed__": [result, packed[1]]} if packed else result)
            cursor += value.nbytes + (-value.nbytes % 64)
        return out


def test_device_arguments_and_results_cross_the_staging_buffers_in_one_walk() -> None:
    """The device path without a GPU (a fake CuPy over host memory): each device argument goes into the ``in``
    buffer and the request names it by ``[offset, dtype, shape]`` (filled in while encoding, no second walk); a
    result comes back as a private copy of its region of the ``out`` buffer; a descriptor out of order or outside
    the buffer is wrong output."""
    harness = _FakeHarness()
    session = ArraySession.__new__(ArraySession)
    session.candidate, session.gpu, session.xp, session.xp_name = harness, True, FAKE_CUPY, "cupy"
    session._device = harness.staging = DeviceStaging(FAKE_CUPY, harness)  # type: ignore[arg-type]
    x = np.arange(6.0).reshape(2, 3).view(_FakeDeviceArray)
    (result,) = session.batch([RemoteCall("double", (x, XP))])
    assert harness.requests[0][0]["args"] == [{"__device__": [0, "<f8", [2, 3]]}, {"__xp__": 1}]
    assert isinstance(result, _FakeDeviceArray) and np.array_equal(result, 2 * x)
    harness.staging.buffers["out"].memory.buf[:8] = bytes(8)  # the candidate writing on: the copy keeps its value
    assert result[0, 0] == 0.0 and result[1, 2] == 10.0
    (first, second) = session.batch([RemoteCall("double", ([x, x[0]],)), RemoteCall("double", ([x[1]],))])
    assert harness.requests[-1][0]["columns"][0]["pack"] == [{"__device__": [0, "<f8", [12]]}, [[[2, 3], [3]], [[3]]]]
    assert [a.tolist() for a in first + second] == [(2 * x).tolist(), [0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]
    size = harness.staging.buffers["out"].size
    for descriptor, reason in (([0, "<f8", [2]], None), (["<f8", [2], 0], "numeric"), ([size, "<f8", [1]], "fit"),
                               ([0, "|O", [1]], "numeric"), ([0, "<f8"], "offset, dtype, shape")):
        if reason is None:
            assert harness.staging.take(descriptor).shape == (2,)
        else:
            with pytest.raises(WrongOutput, match=reason):
                harness.staging.take(descriptor)


@pytest.mark.gpu
def test_device_arrays_cross_through_cuda_ipc_buffers() -> None:
    """On a GPU stage both processes run CuPy: arguments go into the trusted side's IPC buffer, the candidate gets
    private device copies, and its results come back through the other buffer as device arrays."""
    import cupy  # type: ignore[import-not-found]

    sandbox = make_sandbox(Limits(memory_mb=8192), gpu=True)
    candidate = Candidate(textwrap.dedent(STATEFUL), "array", "test", 60.0, 1, sandbox, gpus=1.0)
    with candidate:
        session = ArraySession(candidate)
        assert session.xp is cupy
        jobs = [[cupy.arange(4.0), cupy.ones((2, 3))], [cupy.full(5, 2.0), cupy.zeros((1, 1))]]
        session.batch([RemoteCall("init_state", (p, 3, XP), keep=f"j{i}") for i, p in enumerate(jobs)])
        out = session.batch([RemoteCall("step", (p, p, Held(f"j{i}"), 1, XP), keep=f"j{i}", split=True)
                             for i, p in enumerate(jobs)])
        assert session.remote_module == "cupy"
        assert set(session._device.buffers) == {"in", "out"}  # the device path, not host copies
        for before, after in zip(jobs, out, strict=True):
            assert all(isinstance(a, cupy.ndarray) for a in after)
            assert all(cupy.array_equal(b * 0.5, a) for a, b in zip(after, before, strict=True))
        (single,) = session.batch([RemoteCall("step", (jobs[0], jobs[0], Held("j0"), 2, XP), keep="j0",
                                              split=True)])
        assert cupy.array_equal(single[1], jobs[0][1] * 0.5)


@pytest.mark.gpu
def test_a_device_descriptor_outside_the_buffer_is_wrong_output() -> None:
    import cupy  # type: ignore[import-not-found]

    from evaluators.array_session import DeviceStaging

    candidate = Candidate("x = 1\n", "array", "test", 30.0, 1, make_sandbox(gpu=True), gpus=1.0)
    with candidate:
        staging = DeviceStaging(cupy, candidate)
        staging.place([cupy.ones(4)])
        assert staging.take([0, "<f8", [4]]).shape == (4,)  # a private copy of a region of the out buffer
        with pytest.raises(WrongOutput, match="does not fit"):
            staging.take([staging.buffers["out"].size, "<f8", [1]])
        with pytest.raises(WrongOutput, match="numeric"):
            staging.take([0, "|O", [1]])
