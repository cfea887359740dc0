"""evaluators/array_harness.py: the trusted source check, the array-module choice and the in-sandbox driver call."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from evaluators.array_harness import (
    ALLOWED_IMPORTS,
    HARNESS_PATH,
    call_driver,
    check_source,
    driver_payload,
    make_rng,
    run,
    select_array_module,
    to_host,
)
from evolve.candidate import Candidate
from evolve.sandbox import make_sandbox

from .conftest import PROBLEMS, has_gpu

TINY_DRIVER = '''
def entry(candidate, xp, count):
    values = [candidate.double(xp.arange(count, dtype=xp.float64))]
    return {"module": xp.__name__, "values": values}
'''


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


def test_run_calls_the_driver_with_xp(tmp_path: Path) -> None:
    driver = tmp_path / "tiny_driver.py"
    driver.write_text(TINY_DRIVER)
    candidate = types.SimpleNamespace(double=lambda x: 2 * x)
    reply = run(candidate, driver_payload(driver), "entry", 3)
    assert reply["array_module"] == "numpy"
    assert reply["value"]["module"] == "numpy"
    assert reply["value"]["values"][0].tolist() == [0.0, 2.0, 4.0]


def test_call_driver_runs_in_the_sandbox(tmp_path: Path) -> None:
    driver = tmp_path / "tiny_driver.py"
    driver.write_text(TINY_DRIVER)
    code = "def double(x):\n    return x + x\n"
    with Candidate(code, "tiny", "test", 20.0, 1, make_sandbox()) as candidate:
        value, module = call_driver(candidate, driver, "entry", 4)
    assert module == "numpy"
    assert isinstance(value["values"][0], np.ndarray)
    assert value["values"][0].tolist() == [0.0, 2.0, 4.0, 6.0]


def test_harness_path_points_at_this_module() -> None:
    assert HARNESS_PATH.name == "array_harness.py" and HARNESS_PATH.is_file()
