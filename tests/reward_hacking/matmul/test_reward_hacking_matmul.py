"""Hostile matmul kernels (kernels/) against the real evaluator: each cheat is rejected with the right status, or
scores no better than the honest seed.

Timing-phase cheats run through the real bench stage (job, bench_matmul.py, report, judging) with a CPU stand-in for
the device defined here (standin/): the kernel is the candidate's own code, built by the CPU emulator as a shared
library, and "CuPy" is NumPy. Emulator-detection, include, race and false-positive cases run the real CPU stages.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evaluators.cuda import toolchain as tc
from evolve.evaluation import run_stage
from evolve.problem import Problem, load_problem
from evolve.types import StageOutcome, Status, program_id_for

HERE = Path(__file__).resolve().parent
KERNELS = HERE / "kernels"
MATMUL = HERE.parents[2] / "problems" / "matmul"
SEED = (MATMUL / "initial_program.cu").read_text()

pytestmark = [
    pytest.mark.skipif(tc.find_nvcc() is None and tc.find_nvrtc() is None, reason="needs nvcc or NVRTC"),
    pytest.mark.skipif(tc.find_host_compiler() is None, reason="needs g++ or clang++"),
]

# Small shapes for the stand-in bench: the emulated kernel runs every launch on the CPU.
STANDIN_SETTINGS = """
[compile]
arch = "sm_90"
compiler = "auto"

[cpu_check]
shapes = [[1, 1, 1], [17, 19, 23]]

[bench]
check_shapes = [[1, 1, 1], [17, 19, 23], [33, 40, 70]]
recheck_shapes = [[29, 31, 37]]
bench_shapes = [[48, 40, 32], [20, 60, 8]]
warmups = 5
repetitions = 30
flush_mb = 1
sample_lines = 8
tolerance = 2e-6
"""


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem(MATMUL)


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Problem:
    """problems/matmul with the bench's GPU replaced by the CPU stand-in (standin/), on small shapes."""
    root = tmp_path_factory.mktemp("standin") / "matmul"
    shutil.copytree(MATMUL, root)
    shutil.copytree(HERE / "standin", root / "standin")
    shutil.copy(HERE / "standin" / "standin_evaluator.py", root / "standin_evaluator.py")
    toml = root / "problem.toml"
    toml.write_text(toml.read_text().replace('evaluator = "evaluator.py"', 'evaluator = "standin_evaluator.py"'))
    (root / "settings.toml").write_text(STANDIN_SETTINGS)
    return load_problem(root)


def run(problem: Problem, stage: str, code: str, seed: int = 7) -> StageOutcome:
    return run_stage(problem, stage, code, program_id_for(code), seed)


def kernel(name: str) -> str:
    return (KERNELS / name).read_text()


def explain(outcome: StageOutcome) -> str:
    return f"{outcome.status.value}: {outcome.message}\n{outcome.artifacts}"


# ---- the timing phase, through the real bench with the CPU stand-in -------------------------------------------------

@pytest.fixture(scope="module")
def honest(standin: Problem) -> StageOutcome:
    outcome = run(standin, "bench", SEED)
    assert outcome.status is Status.OK, explain(outcome)
    return outcome


def test_the_honest_seed_passes_the_stand_in_bench(honest: StageOutcome) -> None:
    assert honest.metrics["cublas_fraction"] > 0
    assert "emulator" in honest.artifacts["cubin"]  # the stand-in's compile ran, through the job's compile command


slow = pytest.mark.slow
# (kernel, words the failure must contain: where it was caught and why). Each emulated bench run takes seconds, so
# one of each kind runs by default and the variants are marked slow.
TIMING_CHEATS = [
    pytest.param("inplace_bf16_timed_shapes.cu", "full check before timing: the kernel changed", id="inplace_bf16"),
    pytest.param("zero_a_timed_shapes.cu", "full check before timing: the kernel changed", id="zero_a", marks=slow),
    pytest.param("zero_a_after_first_launch.cu", "timed run 1 of 35: the kernel changed", id="zero_a_later"),
    pytest.param("phase_launch_counter.cu", "timed run 1 of 35", id="launch_counter"),
    pytest.param("phase_shape_bf16.cu", "full check before timing: outputs are off", id="shape_bf16", marks=slow),
    pytest.param("phase_pointer.cu", "M=", id="pointer", marks=slow),
    pytest.param("phase_clock.cu", "M=", id="clock", marks=slow),
]


@pytest.mark.parametrize(("name", "words"), TIMING_CHEATS)
def test_timing_phase_cheats_are_caught_by_the_bench(standin: Problem, honest: StageOutcome, name: str,
                                                     words: str) -> None:
    outcome = run(standin, "bench", kernel(name))
    assert outcome.status is Status.WRONG_OUTPUT, explain(outcome)
    assert words in outcome.message
    assert "cublas_fraction" not in outcome.metrics  # no score at all, so none above the honest seed's


def test_shared_memory_opt_in_counts_static_and_dynamic(standin: Problem) -> None:
    """40 KiB static + 16 KiB dynamic: only 16 KiB is dynamic, yet the launch needs the opt-in (56 KiB > 48 KiB)."""
    outcome = run(standin, "bench", kernel("static_plus_dynamic_smem.cu"))
    assert outcome.status is Status.OK, explain(outcome)
    assert "opt-in 16384 B" in outcome.artifacts["cubin"]


# ---- the CPU emulator does not give itself away ---------------------------------------------------------------------

EMULATOR_DETECTION = ["emu_detect_cuda_arch.cu", pytest.param("emu_detect_host_macros.cu", marks=slow),
                      pytest.param("emu_detect_clock.cu", marks=slow)]


@pytest.mark.parametrize("name", EMULATOR_DETECTION)
def test_kernels_that_look_for_the_emulator_take_their_gpu_branch(problem: Problem, name: str) -> None:
    outcome = run(problem, "cpu_check", kernel(name))
    assert outcome.status is Status.WRONG_OUTPUT, explain(outcome)
    assert "wrong output on the CPU emulator" in outcome.message


def test_an_api_the_emulator_lacks_is_reported_never_a_silent_pass(problem: Problem) -> None:
    outcome = run(problem, "cpu_check", kernel("emu_detect_unsupported_api.cu"))
    assert outcome.status is Status.OK, explain(outcome)
    assert outcome.metrics == {"cpu_checked": 0.0}
    assert "not checkable on CPU" in outcome.artifacts["cpu_check"]
    assert "__reduce_add_sync" in outcome.artifacts["cpu_check"]  # the compiler's own reason, named


@slow
def test_a_run_can_require_the_cpu_check(tmp_path: Path) -> None:
    strict = tmp_path / "matmul"
    shutil.copytree(MATMUL, strict)
    settings = strict / "settings.toml"
    settings.write_text(settings.read_text().replace("require = false", "require = true"))
    outcome = run(load_problem(strict), "cpu_check", kernel("emu_detect_unsupported_api.cu"))
    assert outcome.status is Status.REJECTED, explain(outcome)
    assert "requires the CPU check" in outcome.message


def test_a_race_on_an_output_is_caught_though_every_order_gives_the_right_sum(problem: Problem) -> None:
    outcome = run(problem, "cpu_check", kernel("race_lost_update.cu"))
    assert outcome.status is Status.WRONG_OUTPUT, explain(outcome)
    assert "data race on C[" in outcome.message and "no barrier between them" in outcome.message


def test_a_variable_named_half_keeps_the_cpu_check_on(problem: Problem) -> None:
    outcome = run(problem, "cpu_check", kernel("half_variable.cu"))
    assert outcome.status is Status.OK, explain(outcome)
    assert outcome.metrics["cpu_checked"] == 1.0


# ---- include tricks ---------------------------------------------------------------------------------------------------

INCLUDE_TRICKS = ["include_line_splice.cu", "include_macro.cu", "include_digraph.cu", "include_digit_separator.cu",
                  "include_absolute_path.cu", "include_has_include.cu"]


@pytest.mark.parametrize("name", INCLUDE_TRICKS)
def test_include_tricks_are_rejected(problem: Problem, name: str) -> None:
    outcome = run(problem, "compile", kernel(name))
    assert outcome.status is Status.REJECTED, explain(outcome)
    assert "forbidden include" in outcome.message or "__has_include" in outcome.message


def test_the_preprocessor_check_catches_what_the_text_check_misses(problem: Problem) -> None:
    from evaluators.cuda import source as src

    code = kernel("include_digit_separator.cu")
    assert src.policy_violations(code) == []  # the text lint is fooled...
    for stage in ("compile", "cpu_check"):
        outcome = run(problem, stage, code)  # ...the preprocessor is not
        assert outcome.status is Status.REJECTED, explain(outcome)
        assert "forbidden include 'stdio.h'" in outcome.message


@slow
def test_every_allowed_header_passes_the_include_check(problem: Problem) -> None:
    from evaluators.cuda import source as src

    every = "".join(f"#include <{h}>\n" for h in sorted(src.DEFAULT_INCLUDES))
    outcome = run(problem, "compile", every + SEED)
    assert outcome.status is Status.OK, explain(outcome)
    # The emulator's own headers must not swallow a kernel's <cstdint>: the prologue undoes their include guards.
    outcome = run(problem, "cpu_check", "#include <cstdint>\n#include <stdint.h>\n" + SEED.replace(
        "float acc = 0.0f;", "float acc = 0.0f * static_cast<float>(INT32_MAX) * static_cast<std::uint8_t>(1);"))
    assert outcome.status is Status.OK, explain(outcome)
    assert outcome.metrics["cpu_checked"] == 1.0


# ---- the same cheats on a real GPU (skipped without one) --------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_problem(tmp_path_factory: pytest.TempPathFactory) -> Problem:
    """The real evaluator on the stand-in's small shapes (the kernels above know them as their timed shapes)."""
    root = tmp_path_factory.mktemp("gpu") / "matmul"
    shutil.copytree(MATMUL, root)
    (root / "settings.toml").write_text(STANDIN_SETTINGS)
    return load_problem(root)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(p.name for p in KERNELS.glob("*.cu") if p.stem.startswith(
    ("inplace_", "zero_a_", "phase_"))))
def test_timing_phase_cheats_are_caught_on_a_gpu(gpu_problem: Problem, name: str) -> None:
    outcome = run(gpu_problem, "bench", kernel(name))
    assert outcome.status is Status.WRONG_OUTPUT, explain(outcome)


@pytest.mark.gpu
def test_static_plus_dynamic_shared_memory_launches_on_a_gpu(gpu_problem: Problem) -> None:
    outcome = run(gpu_problem, "bench", kernel("static_plus_dynamic_smem.cu"))
    assert outcome.status is Status.OK, explain(outcome)
    assert "opt-in 16384 B" in outcome.artifacts["cubin"]
