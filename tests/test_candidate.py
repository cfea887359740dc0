"""The trusted side's handle on a candidate: calls, data validation, trusted timing, helpers, in-process mode."""

from __future__ import annotations

import importlib.util
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
    CpuBudgetExceeded,
    InProcessNotAllowed,
    WrongOutput,
    decode_value,
    encode_value,
    trusted_code,
)
from evolve.evaluation import run_stage
from evolve.problem import Limits, load_problem
from evolve.sandbox import Layer, SandboxConfig, make_sandbox
from evolve.sandbox.forkserver import HARNESS_PATH
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


def test_decode_refuses_references_to_missing_arrays():
    with pytest.raises(WrongOutput, match="missing array"):
        decode_value({"__array__": 0})
    assert decode_value({"a": [{"__array__": 0}]}, [np.ones(2)])["a"][0].tolist() == [1.0, 1.0]
    assert encode_value({"x": np.float32(1.5), "y": (1, 2), "z": np.arange(2)}) == {"x": 1.5, "y": [1, 2],
                                                                                  "z": [0, 1]}


def test_values_that_are_not_data_are_wrong_output(sandbox):
    code = """
        class Liar(float):
            def __float__(self):
                return 1e9
        def lie():
            return {"score": Liar(0.5), "object": object()}
    """
    with candidate(sandbox, code) as c, pytest.raises(CandidateFailure) as info:
        c.call("lie")
    assert info.value.status is Status.WRONG_OUTPUT and "cannot send a object" in str(info.value)


def test_call_encoded_takes_prebuilt_data(sandbox):
    with candidate(sandbox, "def add(a, b):\n    return a + b\n") as c:
        out = c.call_encoded("add", [{"__array__": 0}, {"__array__": 1}], [np.arange(3), np.ones(3)])
        assert c.received
    assert out.tolist() == [1.0, 2.0, 3.0]


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


# ------------------------------------------------------------------------------------------------ CPU accounting


HIDDEN_CPU = """
    import os, time
    for name in ("time", "perf_counter", "monotonic", "process_time", "thread_time"):
        setattr(time, name, lambda: 0.0)

    def burn(children):
        for _ in range(children):
            if os.fork() == 0:
                while True:
                    pass
        while True:
            pass

    def quick():
        return 1
"""


def test_cpu_limit_kills_the_whole_tree_and_counts_its_children(sandbox):
    with candidate(sandbox, HIDDEN_CPU) as c:
        assert c.cpu_seconds() == 0.0  # no process yet
        assert c.call("quick") == 1
        assert c.cpu_seconds() < 0.5  # the harness's start-up is not the candidate's
        start = c.cpu_seconds()
        with c.cpu_limit(start + 0.6), pytest.raises(CpuBudgetExceeded):
            c.call("burn", 3)
        spent = c.cpu_seconds() - start
        assert c.call("quick") == 1  # a fresh process serves the next call
    assert 0.6 <= spent < 6.0  # killed once past the limit (polled every 10 ms; generous for a loaded machine)
    assert c.cpu_seconds() >= start + spent  # closed processes stay counted


def test_startup_calls_run_before_the_import_and_are_not_charged(sandbox, tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text("import sys\ndef ready(candidate, tag):\n    return [tag, candidate is None]\n")
    with candidate(sandbox, "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end:\n"
                            "    pass\ndef f():\n    return 2\n") as c:
        c.add_startup(helper, "ready", "x")
        c.cpu_seconds()
        assert c.call("f") == 2
        assert c.startup_values["ready"] == ["x", True]
        assert c.cpu_seconds() >= 0.25  # the import's busy loop is the candidate's CPU


# ------------------------------------------------------------------------------------------------ whose fault


LABELLING_EVALUATOR = '''
from evolve.candidate import EvaluatorError, evaluator_code


def before(candidate):
    raise KeyError("the evaluator's own table")


def after(candidate):
    data = candidate.call("run_packing")
    return {"sum_radii": float(data["radii"][0])}  # 10**400 overflows here: the candidate's doing


def own(candidate):
    candidate.call("run_packing")
    raise EvaluatorError("an invariant of the evaluator broke")


def reference(candidate):
    candidate.call("run_packing")
    with evaluator_code():
        return {"sum_radii": [][0]}
'''


@pytest.mark.parametrize(("function", "status", "text"), [
    ("before", Status.EVALUATOR_ERROR, "KeyError"),
    ("after", Status.WRONG_OUTPUT, "OverflowError"),
    ("own", Status.EVALUATOR_ERROR, "invariant"),
    ("reference", Status.EVALUATOR_ERROR, "IndexError"),
])
def test_exceptions_after_the_candidates_data_arrived_are_its_wrong_output(problem_copy, function, status, text):
    root = problem_copy("circle_packing")
    (root / "evaluator.py").write_text(LABELLING_EVALUATOR)
    problem = load_problem(root)
    problem = replace(problem, stages=(replace(problem.stages[0], function=function),))
    code = "def run_packing():\n    return {'radii': [10**400]}\n"
    outcome = stage(problem, code)
    assert outcome.status is status, outcome
    assert text in outcome.message


def test_trusted_helpers_arrive_compiled_with_the_harness_flags(sandbox, tmp_path):
    helper = tmp_path / "annotated.py"
    # An annotation naming nothing: fine under the postponed annotations the harness always compiled with.
    helper.write_text("def twice(program, x: NotDefinedAnywhere) -> NotDefinedEither:\n    return 2 * x\n")
    fields = trusted_code(str(helper), helper.read_text())
    assert fields["code"] and fields["magic"] and fields["source"] == helper.read_text()
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    assert trusted_code(str(broken), broken.read_text()) == {"source": broken.read_text()}
    with candidate(sandbox, "X = 1\n") as c:
        assert c.call("twice", 21, using=helper) == 42
        with pytest.raises(CandidateFailure, match="SyntaxError"):
            c.call("oops", using=broken)


def test_harness_compiles_the_source_when_the_code_is_not_its_own():
    spec = importlib.util.spec_from_file_location("harness_under_test", HARNESS_PATH)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    fields = trusted_code("/x/m.py", "VALUE = 7\n")
    namespace: dict[str, object] = {}
    exec(harness._code(fields, "/x/m.py"), namespace)  # noqa: S102
    assert namespace["VALUE"] == 7
    for changed in ({"magic": "00"}, {"code": "bm90IGNvZGU="}):  # another interpreter's code; not code at all
        code = harness._code({**fields, "source": "VALUE = 8\n", **changed}, "/x/m.py")
        exec(code, namespace)  # noqa: S102
        assert namespace["VALUE"] == 8 and code.co_filename == "/x/m.py"
