"""problems/matmul and the CUDA harness (evaluators/cuda): source policy, toolchain parsing, output checks, the CPU
stages on the reference ladder and on hostile kernels (tests/matmul_kernels/), and the GPU bench (marker gpu)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evaluators.cuda import HARNESS_DIR
from evaluators.cuda import emulation as emu
from evaluators.cuda import matmul_check as mc
from evaluators.cuda import source as src
from evaluators.cuda import toolchain as tc
from evolve.candidate import CandidateFailure, WrongOutput
from evolve.evaluation import evaluate_locally, load_evaluator, run_stage
from evolve.problem import Problem, load_problem
from evolve.types import StageOutcome, Status, program_id_for

from .conftest import PROBLEMS, has_gpu

MATMUL = PROBLEMS / "matmul"
KERNELS = Path(__file__).parent / "matmul_kernels"
LADDER = [MATMUL / "initial_program.cu", *sorted((MATMUL / "ladder").glob("*.cu"))]

needs_cuda_compiler = pytest.mark.skipif(tc.find_nvcc() is None and tc.find_nvrtc() is None,
                                         reason="needs nvcc or the nvidia-cuda-nvrtc wheel")
needs_host_compiler = pytest.mark.skipif(tc.find_host_compiler() is None, reason="needs g++ or clang++")
needs_disassembler = pytest.mark.skipif(tc.find_disassembler() is None, reason="needs nvdisasm")


@pytest.fixture(scope="module")
def problem() -> Problem:
    return load_problem(MATMUL)


def run(problem: Problem, stage: str, code: str, timeout: float | None = None, seed: int = 7) -> StageOutcome:
    if timeout is not None:
        stages = tuple(dataclasses.replace(s, timeout=timeout) if s.name == stage else s for s in problem.stages)
        problem = dataclasses.replace(problem, stages=stages)
    return run_stage(problem, stage, code, program_id_for(code), seed)


def kernel(name: str) -> str:
    return (KERNELS / name).read_text()


NAIVE = (MATMUL / "initial_program.cu").read_text()


# ---- source text ---------------------------------------------------------------------------------------------------

def test_strip_comments_keeps_every_position():
    code = 'int a; // x <<<\n/* #include <stdio.h>\n */ const char* s = "<<<"; char c = \'<\';\n'
    stripped = src.strip_comments(code)
    assert len(stripped) == len(code) and stripped.count("\n") == code.count("\n")
    assert "<<<" not in stripped and "stdio" not in stripped
    assert stripped.index("const char*") == code.index("const char*")


def test_launch_shape_is_read_from_text_and_derives_the_grid():
    shape = src.read_launch_shape(NAIVE)
    assert shape == src.LaunchShape(threads=256, block_m=16, block_n=16, smem_bytes=0)
    assert shape.grid(m=17, n=33) == (3, 2, 1)
    assert shape.grid(m=1, n=1) == (1, 1, 1)


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda c: c.replace("constexpr int BLOCK_N = 16;", ""), "missing launch constant"),
    (lambda c: c.replace("constexpr int BLOCK_N = 16;", "constexpr int BLOCK_N = 16;\nconstexpr int BLOCK_N = 8;"),
     "defined 2 times"),
    (lambda c: c.replace("constexpr int BLOCK_N = 16;", "constexpr int BLOCK_N = 4 * 4;"), "plain integer literal"),
    (lambda c: c.replace("constexpr int THREADS = 256;", "constexpr int THREADS = 2048;"), "THREADS=2048"),
    (lambda c: c.replace("constexpr int BLOCK_M = 16;", "constexpr int BLOCK_M = 0;"), "BLOCK_M=0"),
    (lambda c: c.replace("constexpr int SMEM_BYTES = 0;", "constexpr int SMEM_BYTES = 999999;"), "SMEM_BYTES"),
    (lambda c: c.replace("constexpr int BLOCK_N = 16;", "// constexpr int BLOCK_N = 16;"), "missing launch constant"),
])
def test_bad_launch_constants_are_explained(edit, reason):
    with pytest.raises(src.SourceError) as info:
        src.read_launch_shape(edit(NAIVE))
    assert reason in str(info.value)


def test_policy_allows_the_allowlist_and_names_each_violation():
    assert src.policy_violations("#include <cstdint>\n#include <mma.h>\n" + NAIVE) == []
    problems = src.policy_violations('#include <stdio.h>\n#include "local.h"\n'
                                     "__global__ void f() { g<<<1, 1>>>(); cudaMalloc(0, 4); }\n")
    text = "\n".join(problems)
    assert "forbidden include 'stdio.h'" in text and "local.h" in text
    assert "device-side kernel launches" in text and "runtime API" in text
    assert src.policy_violations("// #include <stdio.h>\n/* g<<<1,1>>>() */\n") == []


def test_features_the_emulator_cannot_run_are_named():
    assert src.not_emulated(NAIVE) == []
    assert src.not_emulated('asm volatile("mov.u32 %0, 1;" : "=r"(x));') == ["inline PTX (asm)"]
    assert "tensor-core wmma/mma" in src.not_emulated("#include <mma.h>\nnvcuda::wmma::fragment<> f;")
    assert "half / bfloat16 types" in src.not_emulated("__half h;")
    assert "cp.async / pipelines" in src.not_emulated("__pipeline_commit();")


@pytest.mark.parametrize("decl", [
    "extern __shared__ float smem[];",
    "extern __shared__ __align__(16) float smem[];",
    "extern __shared__ float __align__(16) smem[];",
])
def test_dynamic_shared_memory_is_rewritten_for_the_emulator(decl):
    out = src.rewrite_for_emulation(f"__global__ void k() {{\n    {decl}\n}}\n")
    assert "float* smem = reinterpret_cast<float*>(evolve_emu::dynamic_smem());" in out
    assert out.count("\n") == 3


# ---- toolchain reports ---------------------------------------------------------------------------------------------

NVCC_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'matmul' for 'sm_90'
ptxas info    : Function properties for matmul
    64 bytes stack frame, 40 bytes spill stores, 24 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 8192 bytes smem, 400 bytes cmem[0]
"""
NVRTC_LOG = """ptxas info    : 16 bytes gmem
ptxas info    : Compiling entry function 'matmul' for 'sm_90'
ptxas info    : Function properties for matmul
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
"""


def test_ptxas_reports_are_parsed():
    usage = tc.parse_ptxas_report(NVCC_LOG)["matmul"]
    assert (usage.registers, usage.shared_bytes, usage.spill_bytes, usage.stack_bytes) == (168, 8192, 64, 64)
    usage = tc.parse_ptxas_report(NVRTC_LOG)["matmul"]
    assert (usage.registers, usage.shared_bytes, usage.spill_bytes) == (32, 0, 0)
    assert tc.parse_ptxas_report("error: nothing compiled") == {}


def test_sass_opcodes_are_counted_by_base_name():
    sass = """
        /*0420*/                   FFMA R29, R19, R28, R18 ;
        /*0430*/              @!P0 FFMA.FTZ R1, R2, R3, R4 ;
        /*0440*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0450*/                   LDG.E R2, desc[UR4][R2.64] ;
    """
    assert tc.count_opcodes(sass) == {"FFMA": 2, "HMMA": 1, "LDG": 1}


def test_register_file_bound():
    assert tc.registers_fit(64, 1024)
    assert not tc.registers_fit(65, 1024)  # rounded up to 72 per thread
    assert tc.registers_fit(255, 256)


# ---- output checks (pure numpy) ------------------------------------------------------------------------------------

def _clean_output(case: mc.MatmulCase) -> mc.CaseOutput:
    g = case.guard
    c = mc.poison(case.m * case.n + 2 * g)
    c[g:g + case.m * case.n] = (case.a.astype(np.float64) @ case.b.astype(np.float64)).astype(np.float32).ravel()
    return mc.CaseOutput(case.padded(case.a), case.padded(case.b), c)


@pytest.fixture
def case() -> mc.MatmulCase:
    return mc.make_case(np.random.default_rng(3), 5, 7, 9)


def test_a_correct_output_passes(case):
    problems, worst = mc.check_case(case, _clean_output(case))
    assert problems == [] and worst < 0.5


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda o, c: o.c.__setitem__(c.guard + c.m * c.n + 3, 1.0), "guard band after C"),
    (lambda o, c: o.c.__setitem__(c.guard - 1, 1.0), "guard band before C"),
    (lambda o, c: o.a.__setitem__(c.guard + 4, 0.0), "wrote into input A"),
    (lambda o, c: o.b.__setitem__(c.guard + c.k * c.n + 1, 0.0), "guard band after B"),
    (lambda o, c: o.c.__setitem__(c.guard + 2, mc.poison(1)[0]), "still hold the poison"),
    (lambda o, c: o.c.__setitem__(c.guard + 2, o.c[c.guard + 2] * 1.001), "are wrong"),
    (lambda o, c: o.c.__setitem__(c.guard + 2, np.inf), "NaN or infinite"),
])
def test_each_kind_of_damage_is_named(case, damage, expected):
    out = _clean_output(case)
    damage(out, case)
    problems, _ = mc.check_case(case, out)
    assert problems and expected in problems[0]


def test_nan_payloads_name_their_origin_on_the_emulator(case):
    out = _clean_output(case)
    out.c[case.guard] = mc.poison(1, mc.INPUT_GUARD_BITS)[0]
    out.c[case.guard + 1] = np.uint32(0xFFFFFFFF).view(np.float32)
    problems, _ = mc.check_case(case, out, emulated=True)
    assert "outside A or B" in problems[0] and "shared memory" in problems[0]
    assert "outside A or B" not in mc.check_case(case, out, emulated=False)[0][0]


def _round_to_tf32(x: np.ndarray) -> np.ndarray:
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


@pytest.mark.parametrize("k", [8, 300, 2048])
def test_tolerance_passes_fp32_and_rejects_tf32(k):
    case = mc.make_case(np.random.default_rng(k), 24, 24, k)
    acc = np.zeros((24, 24), np.float32)
    for i in range(k):  # the naive kernel's order: one rounding per multiply-add
        acc = (acc + case.a[:, i:i + 1] * case.b[i:i + 1, :]).astype(np.float32)
    assert np.max(mc.normalized_errors(case.a, case.b, acc)) < mc.TOLERANCE / 4
    tf32 = (_round_to_tf32(case.a).astype(np.float64) @ _round_to_tf32(case.b).astype(np.float64))
    assert np.max(mc.normalized_errors(case.a, case.b, tf32.astype(np.float32))) > 4 * mc.TOLERANCE


def _report(kernel_ms: float, cublas_ms: float, device: dict | None = None, **entry) -> dict:
    shapes = [[1024, 1024, 1024], [2048, 512, 256]]
    return {"ok": True, "device": device if device is not None else
            {"name": "test", "major": 9, "minor": 0, "sms": 132, "clock_khz": 1980000},
            "shapes": [{"shape": s, "kernel_ms": [kernel_ms * (1 + 0.01 * i) for i in range(30)],
                        "cublas_ms": [cublas_ms] * 30, "max_sample_error": 1e-7, "poisoned": 0, "nonfinite": 0,
                        "cublas_max_sample_error": 1e-7, **entry} for s in shapes]}


SHAPES = [[1024, 1024, 1024], [2048, 512, 256]]


def test_bench_report_gives_fraction_of_cublas():
    metrics, artifacts = mc.judge_bench(_report(kernel_ms=2.0, cublas_ms=1.0), SHAPES, 30)
    median = 2.0 * (1 + 0.01 * 14.5)
    assert metrics["cublas_fraction"] == pytest.approx(1.0 / median)
    assert metrics["pct_cublas_1024x1024x1024"] == pytest.approx(100.0 / median)
    assert metrics["tflops_1024x1024x1024"] == pytest.approx(2 * 1024**3 / (median * 1e-3) / 1e12)
    assert "of cuBLAS" in artifacts["timing"]


def test_bench_report_faster_than_the_device_is_rejected():
    with pytest.raises(WrongOutput, match="peak"):
        mc.judge_bench(_report(kernel_ms=0.001, cublas_ms=1.0), SHAPES, 30)
    # Unknown peak: bounded by twice cuBLAS's rate instead.
    with pytest.raises(WrongOutput, match="twice cuBLAS"):
        mc.judge_bench(_report(kernel_ms=0.3, cublas_ms=1.0, device={}), SHAPES, 30)


def test_bench_report_checks_samples_poison_and_baseline():
    with pytest.raises(WrongOutput, match="sampled outputs"):
        mc.judge_bench(_report(1.0, 1.0, max_sample_error=1e-4), SHAPES, 30)
    with pytest.raises(WrongOutput, match="poison"):
        mc.judge_bench(_report(1.0, 1.0, poisoned=12), SHAPES, 30)
    with pytest.raises(CandidateFailure, match="TF32") as info:
        mc.judge_bench(_report(1.0, 1.0, cublas_max_sample_error=3e-5), SHAPES, 30)
    assert info.value.status is Status.EVALUATOR_ERROR
    with pytest.raises(CandidateFailure, match="malformed"):
        mc.judge_bench(_report(1.0, 1.0), SHAPES, 31)


# ---- the CPU stages ------------------------------------------------------------------------------------------------

def test_problem_declares_cpu_stages_before_the_gpu_stage(problem):
    assert [(s.name, s.gpus) for s in problem.stages] == [("compile", 0), ("cpu_check", 0), ("bench", 1)]
    assert [f.name for f in problem.features] == ["registers", "shared_kb", "spilled"]
    assert problem.language == "cuda"


@needs_cuda_compiler
@needs_host_compiler
@pytest.mark.parametrize("path", LADDER, ids=lambda p: p.stem)
def test_reference_ladder_compiles_and_passes_cpu_check(problem, path):
    code = path.read_text()
    compiled = run(problem, "compile", code)
    assert compiled.status is Status.OK, compiled.message
    assert compiled.metrics["registers"] > 0 and compiled.metrics["spilled"] == 0
    assert compiled.metrics["threads"] == src.read_launch_shape(code).threads
    if "sass_check" not in compiled.artifacts:
        assert compiled.metrics["ffma"] > 0
    checked = run(problem, "cpu_check", code)
    assert checked.status is Status.OK, f"{checked.message}\n{checked.artifacts}"
    assert checked.metrics["cpu_checked"] == 1.0
    assert checked.metrics["cpu_worst_error"] < 1.0


# (kernel file, stage, status, words the message must contain)
HOSTILE = [
    ("constant_output.cu", "cpu_check", Status.WRONG_OUTPUT, "are wrong"),
    ("tile_multiples_only.cu", "cpu_check", Status.WRONG_OUTPUT, "poison"),
    ("guard_band_write.cu", "cpu_check", Status.WRONG_OUTPUT, "guard band after C"),
    ("missing_syncthreads.cu", "cpu_check", Status.WRONG_OUTPUT, "missing __syncthreads"),
    ("reads_c.cu", "cpu_check", Status.WRONG_OUTPUT, "must not read C"),
    ("writes_input.cu", "cpu_check", Status.WRONG_OUTPUT, "wrote into input A"),
    ("hardcoded_sizes.cu", "cpu_check", Status.WRONG_OUTPUT, "M=3 N=5 K=7"),
    ("misaligned_float4.cu", "cpu_check", Status.RUNTIME_ERROR, "misaligned"),
    ("shuffle_deadlock.cu", "cpu_check", Status.RUNTIME_ERROR, "deadlock"),
    ("wrong_signature.cu", "cpu_check", Status.COMPILE_ERROR, "must be declared as"),
    ("compile_error.cu", "cpu_check", Status.COMPILE_ERROR, "failed to compile"),
    ("forbidden_include.cu", "cpu_check", Status.REJECTED, "forbidden include 'stdio.h'"),
]


@needs_cuda_compiler
@needs_host_compiler
@pytest.mark.parametrize(("name", "stage", "status", "words"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_kernels_are_rejected_on_cpu_with_the_reason(problem, name, stage, status, words):
    outcome = run(problem, stage, kernel(name))
    assert outcome.status is status, f"{outcome.message}\n{outcome.artifacts}"
    assert words in outcome.message


@needs_cuda_compiler
@needs_host_compiler
def test_failures_keep_the_details_for_the_next_prompt(problem):
    outcome = run(problem, "cpu_check", kernel("tile_multiples_only.cu"))
    assert "passed: M=64 N=64 K=64" in outcome.artifacts["cpu_check"]  # the only shape made of whole tiles
    outcome = run(problem, "compile", kernel("compile_error.cu"))
    assert outcome.status is Status.COMPILE_ERROR
    assert 'expected a ";"' in outcome.artifacts["compiler_output"]
    assert "kernel_unit.cu(9)" in outcome.artifacts["compiler_output"]  # the candidate's own line numbers


@needs_cuda_compiler
@needs_disassembler
def test_a_kernel_without_multiply_adds_is_rejected_from_its_sass(problem):
    outcome = run(problem, "compile", kernel("constant_output.cu"))
    assert outcome.status is Status.REJECTED
    assert "no FFMA or HMMA" in outcome.message


@needs_cuda_compiler
@needs_host_compiler
def test_an_endless_kernel_is_killed_at_the_deadline(problem):
    outcome = run(problem, "cpu_check", kernel("infinite_loop.cu"), timeout=5)
    assert outcome.status is Status.TIMEOUT
    assert outcome.seconds < 15


@needs_cuda_compiler
def test_tuned_constants_that_break_the_kernel_are_rejected_cleanly(problem):
    code = (MATMUL / "ladder" / "5_blocktile_2d.cu").read_text()
    outcome = run(problem, "compile", code.replace("constexpr int BLOCK_M = 128;", "constexpr int BLOCK_M = 127;"))
    assert outcome.status is Status.COMPILE_ERROR
    assert "each thread owns a TM x TN sub-tile" in outcome.artifacts["compiler_output"]
    outcome = run(problem, "compile", code.replace("constexpr int THREADS = 256;", "constexpr int THREADS = 1025;"))
    assert outcome.status is Status.REJECTED and "THREADS=1025" in outcome.message


@needs_cuda_compiler
@needs_host_compiler
def test_warp_shuffles_run_on_the_emulator(problem):
    outcome = run(problem, "cpu_check", kernel("valid_warp_shuffle.cu"))
    assert outcome.status is Status.OK and outcome.metrics["cpu_checked"] == 1.0


@needs_cuda_compiler
def test_inline_ptx_passes_as_not_checkable_on_cpu(problem):
    outcome = run(problem, "cpu_check", kernel("valid_inline_ptx.cu"))
    assert outcome.status is Status.OK and outcome.metrics == {"cpu_checked": 0.0}
    assert "not checkable on CPU: uses inline PTX (asm)" in outcome.artifacts["cpu_check"]


@needs_cuda_compiler
@needs_host_compiler
def test_cascade_stops_at_the_first_failing_stage(problem):
    code = kernel("reads_c.cu")
    outcomes = evaluate_locally(problem, code, program_id_for(code), 1, stages=["compile", "cpu_check"])
    assert [(o.stage, o.status) for o in outcomes] == [("compile", Status.OK), ("cpu_check", Status.WRONG_OUTPUT)]


@pytest.mark.skipif(tc.find_nvrtc() is None, reason="needs the nvidia-cuda-nvrtc wheel")
def test_nvrtc_compiles_where_nvcc_is_absent(problem, monkeypatch):
    monkeypatch.setattr(tc, "find_nvcc", lambda: None)
    outcome = run(problem, "compile", NAIVE)
    assert outcome.status is Status.OK, f"{outcome.message}\n{outcome.artifacts}"
    assert outcome.artifacts["resources"].startswith("nvrtc for sm_90")
    assert outcome.metrics["registers"] > 0
    bad = run(problem, "compile", kernel("compile_error.cu"))
    assert bad.status is Status.COMPILE_ERROR and "error" in bad.artifacts["compiler_output"]


@needs_host_compiler
def test_emulator_portable_context_switch_gives_the_same_answer(tmp_path):
    """The ucontext fallback (non-x86-64 hosts) runs the same kernel to the same result as the fast switch."""
    code = (MATMUL / "ladder" / "3_shared_tiled.cu").read_text()
    launcher = load_evaluator(load_problem(MATMUL)).EMULATION_LAUNCHER
    (tmp_path / "unit.cpp").write_text(emu.emulation_unit(code, launcher))
    case = mc.make_case(np.random.default_rng(0), 45, 33, 70)
    mc.write_case_file(tmp_path / "case.bin", case, src.read_launch_shape(code), reverse=True)
    compiler = tc.find_host_compiler()
    argv = emu.build_command(compiler, "unit.cpp", HARNESS_DIR, ["emu_runtime.cpp", "emu_matmul_main.cpp"], "emu")
    subprocess.run([*argv, "-DEVOLVE_EMU_UCONTEXT"], cwd=tmp_path, check=True, timeout=120)
    subprocess.run(["./emu", "case.bin"], cwd=tmp_path, check=True, timeout=60)
    problems, _ = mc.check_case(case, mc.read_case_output(tmp_path / "case.bin.out", case), emulated=True)
    assert problems == []


@pytest.mark.skipif(has_gpu(), reason="checks the message given where no GPU is usable")
def test_bench_without_a_gpu_says_so(problem):
    outcome = run(problem, "bench", NAIVE, timeout=60)
    assert outcome.status is Status.SYSTEM_ERROR
    assert "GPU bench unavailable" in outcome.message
    assert "CuPy" in outcome.message or "CUDA device" in outcome.message


# ---- the GPU stage (skipped without a CUDA device) -----------------------------------------------------------------

@pytest.mark.gpu
def test_bench_scores_the_ladder_in_order(problem):
    fractions = {}
    for path in LADDER:
        outcome = run(problem, "bench", path.read_text())
        assert outcome.status is Status.OK, f"{path.name}: {outcome.message}\n{outcome.artifacts}"
        fractions[path.stem] = outcome.metrics["cublas_fraction"]
        assert 0 < fractions[path.stem] < 1.5
    assert fractions["initial_program"] == min(fractions.values())
    assert fractions["5_blocktile_2d"] > fractions["3_shared_tiled"]


GPU_HOSTILE = [
    ("constant_output.cu", {Status.WRONG_OUTPUT}),
    ("tile_multiples_only.cu", {Status.WRONG_OUTPUT}),
    ("guard_band_write.cu", {Status.WRONG_OUTPUT}),
    ("missing_syncthreads.cu", {Status.WRONG_OUTPUT}),
    ("reads_c.cu", {Status.WRONG_OUTPUT}),
    ("writes_input.cu", {Status.WRONG_OUTPUT}),
    ("hardcoded_sizes.cu", {Status.WRONG_OUTPUT, Status.RUNTIME_ERROR}),  # its stray reads may fault
    ("misaligned_float4.cu", {Status.RUNTIME_ERROR}),
    ("infinite_loop.cu", {Status.TIMEOUT}),
    ("compile_error.cu", {Status.COMPILE_ERROR}),
    ("forbidden_include.cu", {Status.REJECTED}),
]


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "statuses"), GPU_HOSTILE, ids=[h[0] for h in GPU_HOSTILE])
def test_bench_rejects_hostile_kernels(problem, name, statuses):
    outcome = run(problem, "bench", kernel(name), timeout=90)
    assert outcome.status in statuses, f"{outcome.message}\n{outcome.artifacts}"


# ---- the bench script's host logic, with a numpy stand-in for CuPy defined here (no GPU needed) --------------------

class _FakeCuPy:
    """Just enough of CuPy's API, on numpy, for bench_matmul.py's host logic; the "kernel" is numpy's matmul."""

    float32, uint32 = np.float32, np.uint32
    launches: list[tuple] = []

    def __init__(self, kernel_fn):
        fake = self

        class RawKernel:
            def __init__(self, source, name, options=(), backend="nvrtc"):
                assert name == "matmul" and "extern \"C\"" in source
                self.max_dynamic_shared_size_bytes = 0

            def compile(self):
                pass

            def __call__(self, grid, block, args, shared_mem=0):
                fake.launches.append((grid, block, shared_mem))
                a, b, c, m, n, k = args
                kernel_fn(a, b, c, int(m), int(n), int(k))

        class Event:
            def record(self):
                fake.clock += 1

            def synchronize(self):
                pass

        class RandomState:
            def __init__(self, seed):
                self.rng = np.random.default_rng(seed)

            def uniform(self, low, high, size, dtype):
                return self.rng.uniform(low, high, size).astype(dtype)

        class Runtime:
            @staticmethod
            def getDeviceProperties(index):  # noqa: N802 - CuPy's name
                return {"name": b"numpy", "major": 9, "minor": 0, "multiProcessorCount": 132, "clockRate": 1980000}

        class Device:
            def __init__(self, index=0):
                self.attributes = {}

            def synchronize(self):
                pass

        class Cuda:
            runtime = Runtime
            get_elapsed_time = staticmethod(lambda start, end: 1.0 + 0.01 * (fake.clock % 7))

        Cuda.Event, Cuda.Device = Event, Device
        self.cuda, self.RawKernel, self.clock = Cuda, RawKernel, 0
        self.random = type("random", (), {"RandomState": RandomState})

    asarray = staticmethod(np.array)
    asnumpy = staticmethod(np.asarray)
    empty = staticmethod(np.empty)
    isfinite = staticmethod(np.isfinite)
    count_nonzero = staticmethod(np.count_nonzero)

    @staticmethod
    def matmul(x, y, out):
        np.matmul(x, y, out=out)

    @staticmethod
    def get_default_memory_pool():
        return type("pool", (), {"free_all_blocks": staticmethod(lambda: None)})


def _numpy_matmul(a, b, c, m, n, k):
    c[:] = (a.reshape(m, k).astype(np.float64) @ b.reshape(k, n)).astype(np.float32).reshape(c.shape)


def _bench_job(tmp_path: Path, shape: src.LaunchShape) -> tuple[dict, list[tuple[Path, mc.MatmulCase]]]:
    rng = np.random.default_rng(5)
    cases = []
    for i, dims in enumerate([(1, 1, 1), (17, 19, 23), (64, 33, 100)]):
        case = mc.make_case(rng, *dims)
        mc.write_case_file(tmp_path / f"check_{i}.bin", case, shape, reverse=False)
        cases.append((tmp_path / f"check_{i}.bin", case))
    (tmp_path / "k.cu").write_text(NAIVE)
    job = {"source": str(tmp_path / "k.cu"), "options": ["-std=c++17"],
           "launch": {"threads": shape.threads, "block_m": shape.block_m, "block_n": shape.block_n,
                      "smem_bytes": shape.smem_bytes},
           "check_cases": [str(p) for p, _ in cases[:2]], "recheck_cases": [str(cases[2][0])],
           "bench_shapes": [[48, 40, 32], [20, 60, 8]], "warmups": 5, "repetitions": 30, "flush_bytes": 4096,
           "samples": 16, "device_seed": 11, "poison_bits": mc.POISON_BITS, "result": str(tmp_path / "r.json")}
    return job, cases


def _load_bench_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_matmul_under_test", HARNESS_DIR / "bench_matmul.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_script_host_logic_with_a_numpy_stand_in(tmp_path, monkeypatch):
    bench = _load_bench_script()
    shape = src.read_launch_shape(NAIVE)
    job, cases = _bench_job(tmp_path, shape)
    fake = _FakeCuPy(_numpy_matmul)
    monkeypatch.setattr(bench, "load_cupy", lambda: fake)
    report: dict = {}
    bench.run(job, report)
    assert report["phase"] == "done" and report["device"]["sms"] == 132
    for path, case in cases:
        problems, _ = mc.check_case(case, mc.read_case_output(Path(f"{path}.out"), case))
        assert problems == []
    assert ((40 + 15) // 16, (48 + 15) // 16, 1) in [launch[0] for launch in fake.launches]  # grid from the shape
    assert {launch[1] for launch in fake.launches} == {(256, 1, 1)}
    metrics, _ = mc.judge_bench(report, job["bench_shapes"], 30)
    assert 0.5 < metrics["cublas_fraction"] < 2.0
    assert all(len(s["kernel_ms"]) == 30 and s["max_sample_error"] < mc.TOLERANCE for s in report["shapes"])


def test_bench_script_catches_a_kernel_that_skips_work_during_timing(tmp_path, monkeypatch):
    bench = _load_bench_script()
    job, _ = _bench_job(tmp_path, src.read_launch_shape(NAIVE))
    calls = {"n": 0}

    def lazy(a, b, c, m, n, k):  # correct on the check cases, then leaves C alone once timing starts
        calls["n"] += 1
        if calls["n"] <= len(job["check_cases"]):
            _numpy_matmul(a, b, c, m, n, k)

    monkeypatch.setattr(bench, "load_cupy", lambda: _FakeCuPy(lazy))
    report: dict = {}
    bench.run(job, report)
    with pytest.raises(WrongOutput, match="poison"):
        mc.judge_bench(report, job["bench_shapes"], 30)


def test_a_cuda_error_in_the_bench_process_becomes_a_runtime_error(tmp_path, monkeypatch):
    import io
    import json

    from evolve.sandbox.launcher import RunResult

    bench = _load_bench_script()
    job, _ = _bench_job(tmp_path, src.read_launch_shape(NAIVE))

    def crash(a, b, c, m, n, k):
        raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")

    monkeypatch.setattr(bench, "load_cupy", lambda: _FakeCuPy(crash))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(job)))
    assert bench.main() == 1
    evaluator = load_evaluator(load_problem(MATMUL))
    with pytest.raises(CandidateFailure, match="CUDA error during correctness: .*illegal memory access") as info:
        evaluator._read_report(Path(job["result"]), RunResult(1, "", "", 0.1))
    assert info.value.status is Status.RUNTIME_ERROR


STAND_IN = '''"""Test stand-in: the real CPU stages, and a CPU "bench" that scores by code length (not a GPU measurement)."""
import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("matmul_evaluator_base", Path(__file__).with_name("evaluator.py"))
_base = sys.modules["matmul_evaluator_base"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
compile, cpu_check = _base.compile, _base.cpu_check


def bench(candidate):
    return {"cublas_fraction": 1000.0 / len(candidate.code)}
'''


@needs_cuda_compiler
@needs_host_compiler
def test_the_bench_stage_can_be_swapped_for_a_stand_in(problem_copy):
    root = problem_copy("matmul")
    (root / "standin.py").write_text(STAND_IN)
    toml = root / "problem.toml"
    toml.write_text(toml.read_text().replace('evaluator = "evaluator.py"', 'evaluator = "standin.py"'))
    swapped = load_problem(root)
    outcomes = evaluate_locally(swapped, NAIVE, program_id_for(NAIVE), 3)
    assert [(o.stage, o.status) for o in outcomes] == [("compile", Status.OK), ("cpu_check", Status.OK),
                                                       ("bench", Status.OK)]
    assert outcomes[2].metrics["cublas_fraction"] == pytest.approx(1000.0 / len(NAIVE))
