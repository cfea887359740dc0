"""problems/matmul and the CUDA harness (evaluators/cuda): source policy, toolchain parsing, output checks, the CPU
stages on the reference ladder and on hostile kernels (tests/matmul_kernels/), and the GPU bench (marker gpu)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evaluators.cuda import build as bd
from evaluators.cuda import emulation as emu
from evaluators.cuda import matmul_check as mc
from evaluators.cuda import source as src
from evaluators.cuda import toolchain as tc
from evolve.candidate import Candidate, CandidateFailure, WrongOutput
from evolve.evaluation import evaluate_locally, load_evaluator, run_stage
from evolve.problem import Problem, load_problem
from evolve.sandbox import sandbox_for_problem
from evolve.sandbox.launcher import RunResult
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


CLEAN = {"poisoned": 0, "nonfinite": 0, "inputs_changed": 0, "guards": 0}


def _report(kernel_ms: float, cublas_ms: float, device: dict | None = None, full: dict | None = None,
            **entry) -> dict:
    shapes = [[1024, 1024, 1024], [2048, 512, 256]]
    return {"ok": True, "device": device if device is not None else
            {"name": "test", "major": 9, "minor": 0, "sms": 132, "clock_khz": 1980000},
            "full_checks": [{"shape": s, "when": when, "max_error": 1e-7, **CLEAN, **(full or {})}
                            for s in shapes for when in ("before", "after")],
            "shapes": [{"shape": s, "kernel_ms": [kernel_ms * (1 + 0.01 * i) for i in range(30)],
                        "cublas_ms": [cublas_ms] * 30, "max_sample_error": 1e-7, **CLEAN, "checked_runs": 35,
                        "cublas_max_sample_error": 1e-7, **entry} for s in shapes]}


SHAPES = [[1024, 1024, 1024], [2048, 512, 256]]


def test_bench_report_gives_fraction_of_cublas():
    metrics, artifacts = mc.judge_bench(_report(kernel_ms=2.0, cublas_ms=1.0), SHAPES, 30, 5)
    median = 2.0 * (1 + 0.01 * 14.5)
    assert metrics["cublas_fraction"] == pytest.approx(1.0 / median)
    assert metrics["pct_cublas_1024x1024x1024"] == pytest.approx(100.0 / median)
    assert metrics["tflops_1024x1024x1024"] == pytest.approx(2 * 1024**3 / (median * 1e-3) / 1e12)
    assert "of cuBLAS" in artifacts["timing"]


def test_bench_report_faster_than_the_device_is_rejected():
    with pytest.raises(WrongOutput, match="peak"):
        mc.judge_bench(_report(kernel_ms=0.001, cublas_ms=1.0), SHAPES, 30, 5)
    # Unknown peak: bounded by twice cuBLAS's rate instead.
    with pytest.raises(WrongOutput, match="twice cuBLAS"):
        mc.judge_bench(_report(kernel_ms=0.3, cublas_ms=1.0, device={}), SHAPES, 30, 5)


@pytest.mark.parametrize(("report", "words"), [
    (_report(1.0, 1.0, max_sample_error=1e-4), "during timing: error"),
    (_report(1.0, 1.0, poisoned=12), "poisoned=12"),
    (_report(1.0, 1.0, inputs_changed=3), "inputs_changed=3"),
    (_report(1.0, 1.0, guards=1), "guards=1"),
    (_report(1.0, 1.0, full={"inputs_changed": 7}), "full check before timing: inputs_changed=7"),
    (_report(1.0, 1.0, full={"max_error": float("nan")}), "full check before timing: error nan"),
])
def test_bench_report_checks_every_timed_run_and_the_full_checks(report, words):
    with pytest.raises(WrongOutput, match=words.replace("(", r"\(")):
        mc.judge_bench(report, SHAPES, 30, 5)


def test_bench_report_must_be_complete_and_its_baseline_fp32():
    with pytest.raises(CandidateFailure, match="TF32") as info:
        mc.judge_bench(_report(1.0, 1.0, cublas_max_sample_error=3e-5), SHAPES, 30, 5)
    assert info.value.status is Status.EVALUATOR_ERROR
    with pytest.raises(CandidateFailure, match="malformed"):
        mc.judge_bench(_report(1.0, 1.0), SHAPES, 31, 4)
    with pytest.raises(CandidateFailure, match="checked 34 of 35") as info:
        mc.judge_bench(_report(1.0, 1.0, checked_runs=34), SHAPES, 30, 5)
    assert info.value.status is Status.EVALUATOR_ERROR
    incomplete = _report(1.0, 1.0)
    incomplete["full_checks"] = incomplete["full_checks"][:-1]
    with pytest.raises(CandidateFailure, match="lacks the full check at M=2048 N=512 K=256 after"):
        mc.judge_bench(incomplete, SHAPES, 30, 5)


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
    ("missing_syncthreads.cu", "cpu_check", Status.WRONG_OUTPUT, "data race on static shared memory"),
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
def test_atomics_do_not_count_as_races(problem):
    outcome = run(problem, "cpu_check", kernel("valid_atomic_split_k.cu"))
    assert outcome.status is Status.OK, f"{outcome.message}\n{outcome.artifacts}"
    assert outcome.metrics["cpu_checked"] == 1.0


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
    assert 'expected a ";"' in bad.message  # the compiler's own reason, in the message


def _header_sets() -> list[tuple[str, tuple[str, ...]]]:
    """CUDA header folders NVRTC can use here: a toolkit's, and the wheels' (nvidia-cuda-runtime + nvidia-cuda-nvcc)."""
    sets = []
    toolkit = Path("/usr/local/cuda/include")
    if (toolkit / "crt" / "mma.h").is_file():
        sets.append(("toolkit", (str(toolkit),)))
    wheels = tuple(str(base / name / "include") for base in tc.nvidia_package_dirs()
                   for name in ("cuda_runtime", "cuda_nvcc") if (base / name / "include").is_dir())
    if len(wheels) == 2:
        sets.append(("wheels", wheels))
    return sets


@pytest.mark.skipif(tc.find_nvrtc() is None or not _header_sets(), reason="needs NVRTC and CUDA headers")
@pytest.mark.parametrize("headers", _header_sets(), ids=lambda h: h[0])
def test_every_allowed_header_compiles_with_nvrtc(tmp_path, headers):
    """NVRTC ships no headers: the include path (shims for <cstdint>/<stdint.h>, then CUDA's) must cover the list."""
    compiler = bd.DeviceCompiler("nvrtc", tc.find_nvrtc(), headers[1])
    harness = bd.stage_device_files(tmp_path)
    uses = "std::uint64_t u = UINT64_MAX; int32_t i = INT32_MIN; __half h = __float2half(1.0f); (void)u; (void)i;"
    for name in [*sorted(src.DEFAULT_INCLUDES), "all"]:
        names = sorted(src.DEFAULT_INCLUDES) if name == "all" else [name]
        body = uses if name == "all" else ""
        unit = tmp_path / f"{name.replace('.', '_')}.cu"
        unit.write_text("".join(f"#include <{h}>\n" for h in names) + f"{NAIVE}\n__device__ void use() {{ {body} }}\n")
        argv = bd.device_argv(compiler, unit.name, "out.cubin", "sm_90", harness)
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"<{name}>: {done.stdout}{done.stderr}"


@needs_cuda_compiler
def test_the_bench_builds_the_binary_the_compile_stage_measured(problem):
    """Same tool, same flags: on a GPU of the compile stage's architecture the bench's cubin is byte-identical."""
    compiled = run(problem, "compile", NAIVE)
    assert compiled.status is Status.OK, compiled.message
    evaluator = load_evaluator(problem)
    settings = evaluator.load_settings(problem.root)
    with Candidate(NAIVE, program_id_for(NAIVE), "bench", 120, 7, sandbox_for_problem(problem),
                   filename="program.cu", problem_root=problem.root) as candidate:
        job, _, _ = evaluator.bench_job(candidate, settings, src.read_launch_shape(NAIVE))
        argv = [part.replace("{arch}", settings.arch) for part in job["compile"]["argv"]]
        assert candidate.run(argv).ok
        digest = hashlib.sha256(Path(job["compile"]["cubin"]).read_bytes()).hexdigest()
    assert compiled.artifacts["cubin"].startswith(f"sha256 {digest} ")
    assert all(option in argv for option in bd.DEVICE_OPTIONS)  # explicit: no wrapper's defaults (-ftz=true)


@needs_host_compiler
def test_emulator_portable_context_switch_gives_the_same_answer(tmp_path):
    """The ucontext fallback (non-x86-64 hosts) runs the same kernel to the same result as the fast switch."""
    code = (MATMUL / "ladder" / "3_shared_tiled.cu").read_text()
    evaluator = load_evaluator(load_problem(MATMUL))
    compiler = tc.find_host_compiler()
    (tmp_path / "unit.cpp").write_text(emu.emulation_unit(code, evaluator.EMULATION_LAUNCHER))
    objects = emu.prebuilt_objects(compiler, evaluator.EMU_SOURCES, ("-DEVOLVE_EMU_UCONTEXT",)).verified()
    shutil.copy(emu.EMU_HEADER, tmp_path)
    for o in objects:
        shutil.copy(o, tmp_path)
    subprocess.run(emu.compile_command(compiler, "unit.cpp", tmp_path, "unit.o"), cwd=tmp_path, check=True, timeout=120)
    subprocess.run(emu.link_command(compiler, ["unit.o", *(o.name for o in objects)], tmp_path, "emu"), cwd=tmp_path,
                   check=True, timeout=120)
    case = mc.make_case(np.random.default_rng(0), 45, 33, 70)
    mc.write_case_file(tmp_path / "case.bin", case, src.read_launch_shape(code), mc.schedule_code("shuffled", 3))
    subprocess.run(["./emu", "case.bin"], cwd=tmp_path, check=True, timeout=60)
    problems, _ = mc.check_case(case, mc.read_case_output(tmp_path / "case.bin.out", case), emulated=True)
    assert problems == []


@pytest.mark.skipif(has_gpu(), reason="checks the message given where no GPU is usable")
def test_bench_without_a_gpu_says_so(problem):
    outcome = run(problem, "bench", NAIVE, timeout=60)
    assert outcome.status is Status.SYSTEM_ERROR
    assert "GPU bench unavailable" in outcome.message
    assert "CuPy" in outcome.message or "CUDA device" in outcome.message


@pytest.mark.parametrize(("report", "status", "words"), [
    ({"phase": "timing", "error": "CUDADriverError: CUDA_ERROR_ILLEGAL_ADDRESS"}, Status.RUNTIME_ERROR,
     "CUDA error during timing: CUDADriverError: CUDA_ERROR_ILLEGAL_ADDRESS"),
    ({"phase": "compile", "error": "nvcc could not compile", "build": {"tool": "nvcc", "arch": "sm_80", "returncode": 1,
      "log": 'kernel_unit.cu(9): error: identifier "x" is undefined\n1 error detected'}}, Status.COMPILE_ERROR,
     'nvcc failed to compile the kernel for sm_80: kernel_unit.cu(9): error: identifier "x" is undefined'),
    ({"phase": "launch", "error": "THREADS=1024 exceeds the 768 threads"}, Status.REJECTED, "cannot be launched"),
    ({"phase": "timing", "wrong": True, "error": "M=4 N=4 K=4, timed run 3 of 35: the kernel changed 1 element(s)"},
     Status.WRONG_OUTPUT, "timed run 3 of 35"),
    ({"phase": "setup", "error": "no usable CUDA device"}, Status.SYSTEM_ERROR, "GPU bench unavailable"),
    ({"phase": "load", "error": "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "build": {"tool": "nvcc", "arch": "sm_90"}},
     Status.SYSTEM_ERROR, "could not load the kernel compiled by nvcc for sm_90"),
])
def test_bench_reports_map_to_statuses(problem, tmp_path, report, status, words):
    evaluator = load_evaluator(problem)
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"ok": False, **report}))
    with pytest.raises(CandidateFailure) as info:
        evaluator._read_report(path, RunResult(1, "", "", 0.1), [], [], evaluator.load_settings(problem.root))
    assert info.value.status is status
    assert words in str(info.value)


GPU_CHECK = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)], capture_output=True).returncode == 0


@pytest.mark.parametrize("nvidia_smi", [None, "#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n",
                                        "#!/bin/sh\nexit 0\n"], ids=["no-driver", "no-device", "empty-list"])
def test_gpu_check_says_quickly_that_no_gpu_is_present(tmp_path, nvidia_smi):
    """Exit status 2 and one clear line, before installing or running anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nvidia_smi is not None:
        (bin_dir / "nvidia-smi").write_text(nvidia_smi)
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no GPU present" in done.stdout and "nothing was run" in done.stdout
    assert "installing" not in done.stdout


# ---- the GPU stage (skipped without a CUDA device) -----------------------------------------------------------------

def _quick(problem_copy) -> Problem:
    """problems/matmul with small timed shapes: the GPU checks below need correctness and order, not the figures."""
    root = problem_copy("matmul")
    settings = root / "settings.toml"
    text = settings.read_text().replace("bench_shapes = [[4096, 4096, 4096], [2048, 6144, 3072]]",
                                        "bench_shapes = [[1024, 1024, 1024], [512, 1536, 768]]")
    settings.write_text(text.replace("flush_mb = 256", "flush_mb = 64"))
    return load_problem(root)


@pytest.mark.gpu
def test_bench_scores_the_ladder_in_order(problem):
    """The real settings: the fractions of cuBLAS per rung (bench/gpu_check.sh reads them from $EVOLVE_LADDER_REPORT)."""
    fractions = {}
    for path in LADDER:
        outcome = run(problem, "bench", path.read_text())
        assert outcome.status is Status.OK, f"{path.name}: {outcome.message}\n{outcome.artifacts}"
        fractions[path.stem] = outcome.metrics["cublas_fraction"]
        assert 0 < fractions[path.stem] < 1.5
    if os.environ.get("EVOLVE_LADDER_REPORT"):
        Path(os.environ["EVOLVE_LADDER_REPORT"]).write_text(json.dumps(fractions))
    assert fractions["initial_program"] == min(fractions.values())
    assert fractions["5_blocktile_2d"] > fractions["3_shared_tiled"]


GPU_HOSTILE = [
    ("constant_output.cu", {Status.WRONG_OUTPUT, Status.REJECTED}),
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
def test_bench_rejects_hostile_kernels(problem_copy, name, statuses):
    outcome = run(_quick(problem_copy), "bench", kernel(name), timeout=40)
    assert outcome.status in statuses, f"{outcome.message}\n{outcome.artifacts}"


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


# ---- the held-out stage (oversight): unseen shapes, fresh buffers ---------------------------------------------------

HELDOUT_CHEAT = (Path(__file__).resolve().parent / "heldout_cheats" / "matmul_visible_shapes_only.cu").read_text()
HELDOUT_STANDIN = '''"""The CPU stand-in bench of tests/reward_hacking/matmul, with the held-out stage exported too."""
import standin_evaluator as _standin

compile, cpu_check, bench = _standin.compile, _standin.cpu_check, _standin.bench
heldout = _standin._base.heldout
'''


def test_heldout_settings_are_shapes_the_visible_stages_never_use() -> None:
    settings = load_evaluator(load_problem(MATMUL)).load_settings(MATMUL)
    visible = set(settings.cpu_shapes) | set(settings.check_shapes) | set(settings.recheck_shapes) | \
        set(settings.bench_shapes)
    held = settings.heldout()
    unseen = set(held.check_shapes) | set(held.recheck_shapes) | set(held.bench_shapes)
    assert unseen and not unseen & visible
    assert held.bench_shapes == settings.heldout_bench_shapes and held.tolerance == settings.tolerance
    problem = load_problem(MATMUL)
    assert [s.name for s in problem.heldout_stages] == ["heldout"] and problem.heldout_stages[0].gpus == 1
    assert problem.heldout_metric == "heldout_cublas_fraction" and problem.score.bound == 1.25


@pytest.fixture(scope="module")
def heldout_standin(tmp_path_factory: pytest.TempPathFactory) -> Problem:
    """problems/matmul with the bench's GPU replaced by the CPU stand-in, small visible and held-out shapes."""
    from .reward_hacking.matmul.test_reward_hacking_matmul import HERE as HACKS
    from .reward_hacking.matmul.test_reward_hacking_matmul import STANDIN_SETTINGS

    root = tmp_path_factory.mktemp("heldout") / "matmul"
    shutil.copytree(MATMUL, root)
    shutil.copytree(HACKS / "standin", root / "standin")
    shutil.copy(HACKS / "standin" / "standin_evaluator.py", root / "standin_evaluator.py")
    (root / "heldout_standin.py").write_text(HELDOUT_STANDIN)
    toml = root / "problem.toml"
    toml.write_text(toml.read_text().replace('evaluator = "evaluator.py"', 'evaluator = "heldout_standin.py"'))
    (root / "settings.toml").write_text(STANDIN_SETTINGS + """
[heldout]
check_shapes = [[2, 3, 5], [19, 17, 29]]
recheck_shapes = [[23, 9, 41]]
bench_shapes = [[40, 48, 24], [12, 36, 20]]
""")
    return load_problem(root)


@needs_cuda_compiler
@needs_host_compiler
def test_the_heldout_stage_benches_unseen_shapes_and_catches_a_kernel_right_only_where_looked_at(
        heldout_standin: Problem) -> None:
    from evolve.oversight.standing import CascadeResult, Standing, judge

    honest = run(heldout_standin, "heldout", NAIVE)
    assert honest.status is Status.OK, honest.message
    assert honest.metrics["heldout_cublas_fraction"] > 0
    assert {"heldout_tflops_40x48x24", "heldout_tflops_12x36x20"} <= set(honest.metrics), sorted(honest.metrics)
    assert all(k.startswith("heldout_") for k in list(honest.metrics) + list(honest.artifacts))
    cheat = run(heldout_standin, "bench", HELDOUT_CHEAT)
    assert cheat.status is Status.OK, cheat.message  # the visible bench cannot tell
    held = run(heldout_standin, "heldout", HELDOUT_CHEAT)
    assert held.status is Status.WRONG_OUTPUT, held.message
    problem = heldout_standin
    verdict = judge(problem.oversight, 1.0, cheat.metrics["cublas_fraction"], CascadeResult((held,)),
                    problem.heldout_metric, [], problem.visible_metric)
    assert verdict.standing is Standing.OVERFIT
