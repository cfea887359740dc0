"""The trusted side's handle on a candidate: calls, data validation, trusted timing, helpers, in-process mode."""

from __future__ import annotations

import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from evolve.candidate import (
    Candidate,
    CandidateFailure,
    CandidateTimeout,
    InProcessNotAllowed,
    WrongOutput,
    decode_value,
    encode_value,
)
from evolve.evaluation import run_stage
from evolve.problem import Limits, load_problem
from evolve.sandbox import Layer, SandboxConfig, make_sandbox
from evolve.types import Status, program_id_for

from .conftest import live_descendants


@pytest.fixture(scope="module")
def sandbox():
    return make_sandbox(Limits(memory_mb=1024, processes=32), SandboxConfig(allow_in_process=True,
                                                                            max_reply_mb=1))


def candidate(sandbox, code: str, timeout: float = 20.0) -> Candidate:
    return Candidate(textwrap.dedent(code), "test", "stage", timeout, seed=1, sandbox=sandbox)


def test_call_round_trips_numpy_arrays(sandbox):
    code = """
        import numpy as np
        def scale(a, factor=1):
            return {"scaled": a * factor, "dtype": str(a.dtype)}
    """
    with candidate(sandbox, code) as c:
        out = c.call("scale", np.arange(6, dtype=np.int16).reshape(2, 3), factor=3)
    assert out["dtype"] == "int16"
    assert out["scaled"].dtype == np.int16 and out["scaled"].shape == (2, 3)
    assert out["scaled"].tolist() == [[0, 3, 6], [9, 12, 15]]
    assert c.isolation == sandbox.level


def test_decode_refuses_object_arrays_and_malformed_shapes():
    with pytest.raises(WrongOutput, match="not numeric"):
        decode_value({"__ndarray__": [1], "dtype": "object", "shape": [1]})
    with pytest.raises(WrongOutput, match="malformed"):
        decode_value({"__ndarray__": [1, 2, 3], "dtype": "float64", "shape": [2, 2]})
    assert encode_value({"x": np.float32(1.5), "y": (1, 2)}) == {"x": 1.5, "y": [1, 2]}


def test_timing_is_measured_on_the_trusted_side(sandbox):
    code = """
        import time
        _sleep = time.sleep
        time.perf_counter = time.monotonic = time.time = lambda: 0.0
        def slow():
            _sleep(0.3)
            return 1
    """
    with candidate(sandbox, code) as c:
        assert c.call("slow") == 1
    assert c.call_seconds[-1] >= 0.3


def test_import_error_is_a_compile_error_and_exceptions_are_runtime_errors(sandbox):
    with candidate(sandbox, "def broken(:\n    pass\n") as c, pytest.raises(CandidateFailure) as info:
        c.call("broken")
    assert info.value.status is Status.COMPILE_ERROR and "SyntaxError" in str(info.value)
    with candidate(sandbox, "def boom():\n    raise ValueError('no')\n") as c, pytest.raises(CandidateFailure) as info:
        c.call("boom")
    assert info.value.status is Status.RUNTIME_ERROR
    assert "ValueError: no" in info.value.artifacts["traceback"]


def test_call_timeout_kills_the_process(sandbox):
    with candidate(sandbox, "import time\ndef wait():\n    time.sleep(60)\n", timeout=20) as c:
        start = time.monotonic()
        with pytest.raises(CandidateTimeout):
            c.call("wait", timeout=0.5)
        assert time.monotonic() - start < 1.5


def test_a_stopped_candidate_cannot_block_a_large_request(sandbox):
    code = """
        import os, signal, threading, time
        def stop_soon():
            threading.Thread(target=lambda: (time.sleep(0.2), os.kill(os.getpid(), signal.SIGSTOP))).start()
        def size(data):
            return len(data)
    """
    with candidate(sandbox, code) as c:
        c.call("stop_soon")
        time.sleep(0.5)
        start = time.monotonic()
        with pytest.raises(CandidateTimeout):
            c.call("size", "x" * (8 << 20), timeout=1.0)  # far more than a pipe holds
        assert time.monotonic() - start < 2.0


def test_reply_size_is_capped(sandbox):
    with candidate(sandbox, "def big():\n    return 'x' * (2 << 20)\n") as c, pytest.raises(CandidateFailure) as info:
        c.call("big")
    assert info.value.status is Status.WRONG_OUTPUT and "larger than" in str(info.value)


def test_helper_source_is_sent_so_the_helper_file_can_stay_unreadable(sandbox, tmp_path):
    helper = tmp_path / "trainer.py"
    helper.write_text("def train(program, steps):\n    return sum(program.step(i) for i in range(steps))\n")
    code = """
        def step(i):
            return i * i
        def peek(path):
            try:
                open(path).read()
                return "read"
            except OSError:
                return "denied"
    """
    with candidate(sandbox, code) as c:
        assert c.call("train", 4, using=helper) == 0 + 1 + 4 + 9
        if Layer.LANDLOCK in sandbox.layers:
            assert c.call("peek", str(helper)) == "denied"


def test_restart_starts_a_fresh_process_from_the_trusted_source(sandbox):
    code = """
        import os
        calls = 0
        def count():
            global calls
            calls += 1
            os.unlink(__file__)
            open(__file__, "w").write("def count():\\n    return 'tampered'\\n")
            return calls
    """
    with candidate(sandbox, code) as c:
        assert c.call("count") == 1
        assert c.call("count") == 2
        c.restart()
        assert c.call("count") == 1
    assert c.code == textwrap.dedent(code)


def test_in_process_evaluator_runs_inside_the_sandbox(sandbox, tmp_path):
    evaluator = tmp_path / "openevolve_style.py"
    evaluator.write_text(textwrap.dedent("""
        import importlib.util, os
        class EvaluationResult:
            def __init__(self, metrics, artifacts):
                self.metrics, self.artifacts = metrics, artifacts
        def evaluate(program_path):
            spec = importlib.util.spec_from_file_location("prog", program_path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return EvaluationResult({"score": float(module.solve()), "uid": float(os.getuid())},
                                    {"note": "ran in the sandbox"})
    """))
    with candidate(sandbox, "def solve():\n    return 41 + 1\n") as c:
        metrics = c.run_evaluator_in_sandbox(evaluator)
        assert c.in_process
    assert metrics["score"] == 42.0
    assert c.artifacts["note"] == "ran in the sandbox"
    if Layer.UID in sandbox.layers:
        assert metrics["uid"] != 0.0


def test_in_process_mode_must_be_enabled(tmp_path):
    strict = make_sandbox(config=SandboxConfig())
    evaluator = tmp_path / "e.py"
    evaluator.write_text("def evaluate(path):\n    return {}\n")
    with candidate(strict, "x = 1\n") as c, pytest.raises(InProcessNotAllowed):
        c.run_evaluator_in_sandbox(evaluator)


def test_run_compiles_and_executes_in_the_scratch_dir(sandbox):
    with candidate(sandbox, "int main(void) { return 7; }\n") as c:
        source = c.scratch / "main.c"
        source.write_text(c.code)
        build = c.run(["cc", "-O0", "-o", "main", "main.c"], timeout=60)
        assert build.ok, build.stderr
        assert c.run(["./main"]).returncode == 7
    assert not Path(c.scratch).exists()


# ------------------------------------------------------------------------------- engine-level checks (run_stage)


@pytest.fixture
def circle_packing(problem_copy):
    return load_problem(problem_copy("circle_packing"))


def stage(problem, code: str):
    return run_stage(problem, "validate", code, program_id_for(code), 0)


def test_fake_score_on_stdout_leaves_the_score_alone(circle_packing):
    honest = stage(circle_packing, circle_packing.seed_code())
    faker = circle_packing.seed_code() + "\nprint('sum_radii: 99.0')\nprint('{\"sum_radii\": 99.0}')\n"
    outcome = stage(circle_packing, faker)
    assert honest.status is outcome.status is Status.OK
    assert outcome.metrics["sum_radii"] == honest.metrics["sum_radii"] < 3


def test_memory_hog_is_a_memory_failure(circle_packing):
    hog = "def run_packing():\n    blocks = []\n    while True:\n        blocks.append(bytearray(1 << 28))\n"
    outcome = stage(circle_packing, hog)
    assert outcome.status is Status.MEMORY, outcome


def test_timeout_kills_candidate_and_children_within_a_second(circle_packing):
    code = textwrap.dedent("""
        import os, time
        def run_packing():
            for _ in range(3):
                if os.fork() == 0:
                    os.setsid()
                    while True:
                        time.sleep(0.05)
            while True:
                pass
    """)
    quick = replace(circle_packing, stages=(replace(circle_packing.stages[0], timeout=1.0),))
    start = time.monotonic()
    outcome = stage(quick, code)
    assert outcome.status is Status.TIMEOUT
    server_pid = make_sandbox().server.hello.pid
    while live_descendants(server_pid) and time.monotonic() - start < 2.0:
        time.sleep(0.02)  # a monitor may still be exiting after reporting
    assert live_descendants(server_pid) == []
    assert time.monotonic() - start <= 1.0 + 1.0
