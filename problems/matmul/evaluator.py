"""Trusted evaluator for CUDA matmul kernels: compile (CPU), cpu_check (CPU emulation), bench (1 GPU, CuPy).

Every native step (nvcc/NVRTC, the preprocessor, nvdisasm, the host compiler, the emulated kernel, the CuPy bench)
runs through ``candidate.run`` in the sandbox; this module only writes inputs, reads results back and judges them.
Inputs come from ``candidate.seed``, which the kernel never sees. Settings (target architecture, compiler, shapes,
repetitions, tolerance) are in ``settings.toml`` next to this file; ``$EVOLVE_CUDA_ARCH`` overrides the architecture.

``heldout`` is the held-out stage (``role = "heldout"``): the bench again, on the held-out seed's fresh inputs and
buffers, at the ``[heldout]`` shapes of settings.toml, which the visible stages never check or time; its metrics are
``heldout_*``. Oversight runs it only for a kernel about to count as best and keeps what it returns from prompts.

Each stage function can be used alone (``evolve eval --stages``), so each re-checks the source policy and launch
shape it relies on. To swap the GPU for a stand-in (tests), point problem.toml's ``evaluator`` at a module that loads
this file with importlib (registering it in ``sys.modules`` first: it defines dataclasses), re-exports the stages and
replaces ``bench_compile_argv`` and ``run_bench_process``; tests/reward_hacking/matmul has one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.cuda import HARNESS_DIR
from evaluators.cuda import build as bd
from evaluators.cuda import device_macros as dm
from evaluators.cuda import emulation as emu
from evaluators.cuda import include_check as ic
from evaluators.cuda import matmul_check as mc
from evaluators.cuda import source as src
from evaluators.cuda import toolchain as tc
from evaluators.cuda.staging import stage_files
from evolve import Candidate, CandidateFailure, CompileError, StageReport, Status, WrongOutput
from evolve.candidate import CandidateTimeout
from evolve.sandbox.launcher import RunResult

KERNEL = "matmul"
SIGNATURE = "void (*)(const float*, const float*, float*, int, int, int)"
SIGNATURE_HELP = ('matmul must be declared as: extern "C" __global__ void matmul(const float* A, const float* B, '
                  'float* C, int M, int N, int K)')
_HELP_LITERAL = SIGNATURE_HELP.replace('"', '\\"')
# Appended to the candidate for the device compile: the kernel's type must match exactly.
DEVICE_SIGNATURE_CHECK = f"""
template <class T, class U> struct evolve_same_type {{ static constexpr bool value = false; }};
template <class T> struct evolve_same_type<T, T> {{ static constexpr bool value = true; }};
static_assert(evolve_same_type<decltype(&{KERNEL}), {SIGNATURE}>::value, "{_HELP_LITERAL}");
"""
# Appended for the CPU emulation: the same check, and the launcher the driver calls.
EMULATION_LAUNCHER = f"""
static_assert(evolve_emu::same_type<decltype(&{KERNEL}), {SIGNATURE}>::value, "{_HELP_LITERAL}");
extern "C" void evolve_emu_launch(unsigned int grid_x, unsigned int grid_y, unsigned int threads,
                                  unsigned long long smem_bytes, const float* A, const float* B, float* C, int M,
                                  int N, int K) {{
    evolve_emu::launch_kernel({KERNEL}, dim3(grid_x, grid_y, 1), dim3(threads, 1, 1), smem_bytes, A, B, C, M, N, K);
}}
"""
EMU_DRIVER = HARNESS_DIR / "emu_matmul_main.cpp"
EMU_SOURCES = (emu.EMU_RUNTIME, emu.EMU_RACE, EMU_DRIVER)
BENCH_SCRIPT = HARNESS_DIR / "bench_matmul.py"
PASSTHROUGH_ENV = ("CUDA_PATH", "CUDA_HOME", "LD_LIBRARY_PATH", "CUPY_CUDA_PATH")
UNIT = "kernel_unit.cu"
BEFORE, AFTER = "before timing", "after timing (new inputs and buffers)"


@dataclass(frozen=True)
class Settings:
    arch: str
    compiler: str
    cpu_shapes: tuple[tuple[int, int, int], ...]
    require_cpu_check: bool
    check_shapes: tuple[tuple[int, int, int], ...]
    recheck_shapes: tuple[tuple[int, int, int], ...]
    bench_shapes: tuple[tuple[int, int, int], ...]
    warmups: int
    repetitions: int
    flush_mb: int
    sample_lines: int
    tolerance: float
    heldout_check_shapes: tuple[tuple[int, int, int], ...] = ()
    heldout_recheck_shapes: tuple[tuple[int, int, int], ...] = ()
    heldout_bench_shapes: tuple[tuple[int, int, int], ...] = ()

    def heldout(self) -> Settings:
        """The same settings with the held-out shapes in place of the visible ones."""
        if not (self.heldout_check_shapes and self.heldout_recheck_shapes and self.heldout_bench_shapes):
            raise ValueError("settings.toml: the [heldout] table needs check_shapes, recheck_shapes and bench_shapes")
        return dataclasses.replace(self, check_shapes=self.heldout_check_shapes,
                                   recheck_shapes=self.heldout_recheck_shapes, bench_shapes=self.heldout_bench_shapes)


def _shapes(table: dict[str, Any], key: str) -> tuple[tuple[int, int, int], ...]:
    shapes = tuple(tuple(int(v) for v in shape) for shape in table[key])
    if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise ValueError(f"settings.toml: {key} must be a non-empty list of [M, N, K] with positive sizes")
    return shapes  # type: ignore[return-value]


def load_settings(root: Path | None) -> Settings:
    path = (root or Path(__file__).parent) / "settings.toml"
    data = tomllib.loads(path.read_text())
    bench = data["bench"]
    held = data.get("heldout", {})
    settings = Settings(
        arch=os.environ.get("EVOLVE_CUDA_ARCH") or data["compile"]["arch"],
        compiler=str(data["compile"].get("compiler", "auto")),
        cpu_shapes=_shapes(data["cpu_check"], "shapes"),
        require_cpu_check=bool(data["cpu_check"].get("require", False)),
        check_shapes=_shapes(bench, "check_shapes"),
        recheck_shapes=_shapes(bench, "recheck_shapes"),
        bench_shapes=_shapes(bench, "bench_shapes"),
        warmups=int(bench["warmups"]),
        repetitions=int(bench["repetitions"]),
        flush_mb=int(bench["flush_mb"]),
        sample_lines=int(bench["sample_lines"]),
        tolerance=float(bench["tolerance"]),
        heldout_check_shapes=_shapes(held, "check_shapes") if held else (),
        heldout_recheck_shapes=_shapes(held, "recheck_shapes") if held else (),
        heldout_bench_shapes=_shapes(held, "bench_shapes") if held else (),
    )
    if settings.repetitions < 30 or settings.warmups < 5:
        raise ValueError("settings.toml: at least 5 warm-ups and 30 repetitions")
    if settings.sample_lines < 1:
        raise ValueError("settings.toml: sample_lines must be at least 1")
    return settings


def _screen(candidate: Candidate, settings: Settings) -> src.LaunchShape:
    """Policy and launch shape, read from the text alone; violations are rejections with every reason listed."""
    problems = src.policy_violations(candidate.code)
    try:
        shape = src.read_launch_shape(candidate.code, max_smem_bytes=tc.max_shared_bytes(settings.arch))
    except src.SourceError as exc:
        problems += exc.problems
        shape = None
    if problems or shape is None:
        raise CandidateFailure("; ".join(problems), {"policy": "\n".join(problems)}, Status.REJECTED)
    return shape


def _launch_metrics(shape: src.LaunchShape) -> dict[str, float]:
    return {"threads": float(shape.threads), "block_m": float(shape.block_m), "block_n": float(shape.block_n),
            "dynamic_smem_bytes": float(shape.smem_bytes)}


def _device_compiler(settings: Settings) -> bd.DeviceCompiler:
    compiler = bd.find_device_compiler(settings.compiler)
    if compiler is None:
        raise CandidateFailure(tc.NO_COMPILER_HELP, status=Status.EVALUATOR_ERROR)
    return compiler


def _device_table(settings: Settings, host: str) -> dm.DeviceTable:
    """The device compile's macro table (trusted, cached per process)."""
    compiler = _device_compiler(settings)
    try:
        return dm.device_table(host, compiler.tool, compiler.path, settings.arch, bd.DEVICE_OPTIONS)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CandidateFailure(f"cannot read the host compiler's macros: {exc}", status=Status.EVALUATOR_ERROR) \
            from None


def _check_includes(candidate: Candidate, settings: Settings, harness: Path) -> str:
    """Reject any header beyond the allowlist, as the preprocessor resolves it; returns a note when imperfect."""
    host = tc.find_host_compiler()
    if host is None:
        return "include check by the preprocessor skipped: no host C++ compiler (the text check still applies)"
    table = _device_table(settings, host)
    defines = dm.defines_header(dm.host_table(host), table.macros)
    ic.prepare(harness, src.DEFAULT_INCLUDES, defines)
    unit = candidate.scratch / "include_check.cu"
    unit.write_text(candidate.code)
    result = candidate.run(ic.preprocess_argv(host, unit.name, harness))
    problems = ic.violations(result, harness, src.DEFAULT_INCLUDES)
    if problems:
        raise CandidateFailure("; ".join(problems), {"policy": "\n".join(problems)}, Status.REJECTED)
    return table.note


# ---- stage 1: compile (CPU) ---------------------------------------------------------------------------------------

def _device_unit(candidate: Candidate) -> Path:
    """The candidate's source with the signature check appended (its own line numbers unchanged)."""
    unit = candidate.scratch / UNIT
    unit.write_text(candidate.code + "\n" + DEVICE_SIGNATURE_CHECK)
    return unit


@dataclass(frozen=True)
class DeviceBuild:
    tool: str  # "nvcc" or "nvrtc"
    log: str  # compiler output, ptxas -v resource usage included
    cubin_sha256: str


def compile_failure(tool: str, arch: str, log: str) -> CompileError:
    """The compiler's own reason, first error line in the message, the log bounded in an artifact."""
    message = f"{tool} failed to compile the kernel for {arch}"
    if SIGNATURE_HELP.split(":")[0] in log:
        message += f": {SIGNATURE_HELP}"
    elif reason := bd.first_error(log):
        message += f": {reason}"
    return CompileError(message, {"compiler_output": tc.compiler_errors(log)})


def _device_compile(candidate: Candidate, settings: Settings) -> DeviceBuild:
    """Compile for ``settings.arch`` to kernel.cubin in the sandbox; ``CompileError`` with the log on failure."""
    compiler = _device_compiler(settings)
    _device_unit(candidate)
    harness = bd.stage_device_files(candidate.scratch)
    result = candidate.run(bd.device_argv(compiler, UNIT, "kernel.cubin", settings.arch, harness))
    log = (result.stdout + "\n" + result.stderr).strip()
    if result.timed_out:
        raise CandidateTimeout(f"{compiler.tool} did not finish", {"compiler_output": tc.compiler_errors(log)})
    if compiler.tool == "nvrtc" and result.returncode == tc.NVRTC_UNUSABLE:
        raise CandidateFailure(f"NVRTC is unusable here: {log[-1000:]}", status=Status.EVALUATOR_ERROR)
    cubin = candidate.scratch / "kernel.cubin"
    if not result.ok or not cubin.is_file():
        raise compile_failure(compiler.tool, settings.arch, log)
    return DeviceBuild(compiler.tool, log, hashlib.sha256(cubin.read_bytes()).hexdigest())


def compile(candidate: Candidate) -> StageReport:  # shadows the builtin on purpose: the stage name
    settings = load_settings(candidate.problem_root)
    shape = _screen(candidate, settings)
    note = _check_includes(candidate, settings, bd.stage_device_files(candidate.scratch))
    build = _device_compile(candidate, settings)
    resources = tc.parse_ptxas_report(build.log)
    if KERNEL not in resources:
        found = ", ".join(sorted(resources)) or "none"
        raise CompileError(f'no kernel entry named "{KERNEL}" (found: {found}); {SIGNATURE_HELP}',
                           {"compiler_output": tc.compiler_errors(build.log)})
    usage = resources[KERNEL]
    _check_launch_fits(usage, shape, settings.arch, build.log)
    total_smem = usage.shared_bytes + shape.smem_bytes
    metrics = {
        "registers": float(usage.registers),
        "shared_bytes": float(total_smem),
        "shared_kb": total_smem / 1024.0,
        "spill_bytes": float(usage.spill_bytes),
        "spilled": 1.0 if usage.spill_bytes else 0.0,
        "stack_bytes": float(usage.stack_bytes),
        **_launch_metrics(shape),
    }
    artifacts = {"resources": f"{build.tool} for {settings.arch}: {usage.registers} registers, {usage.shared_bytes} B "
                              f"static + {shape.smem_bytes} B dynamic shared memory, {usage.spill_store_bytes} B "
                              f"spill stores, {usage.spill_load_bytes} B spill loads, {usage.stack_bytes} B stack",
                 "cubin": f"sha256 {build.cubin_sha256} ({build.tool}, {settings.arch}, "
                          f"{' '.join(bd.DEVICE_OPTIONS)}); the bench builds the same for its GPU"}
    if note:
        artifacts["preprocessor"] = note
    sass_metrics, sass_note = _sass_check(candidate, artifacts["resources"])
    metrics.update(sass_metrics)
    if sass_note:
        artifacts["sass_check"] = sass_note
    return StageReport(metrics, artifacts)


def _check_launch_fits(usage: tc.KernelResources, shape: src.LaunchShape, arch: str, log: str) -> None:
    """Reject launch shapes the GPU would refuse (too many registers or too much shared memory per block)."""
    problems = []
    total_smem = usage.shared_bytes + shape.smem_bytes
    limit = tc.max_shared_bytes(arch)
    if total_smem > limit:
        problems.append(f"shared memory {usage.shared_bytes} static + {shape.smem_bytes} dynamic = {total_smem} bytes "
                        f"exceeds the {limit} bytes a block may use on {arch}")
    if not tc.registers_fit(usage.registers, shape.threads):
        problems.append(f"{usage.registers} registers x {shape.threads} threads exceed the register file "
                        f"({tc.REGISTER_FILE}); the launch would fail (lower THREADS or use __launch_bounds__)")
    if problems:
        raise CandidateFailure("; ".join(problems), {"resources": log[-4000:]}, Status.REJECTED)


def _sass_check(candidate: Candidate, resources: str) -> tuple[dict[str, float], str]:
    """Instruction counts from the SASS; a kernel with no FFMA/HMMA is rejected. Returns (metrics, skip note)."""
    disassembler = tc.find_disassembler()
    if disassembler is None:
        return {}, "skipped: no nvdisasm found (pip install nvidia-cuda-nvdisasm)"
    sass = candidate.run([disassembler, "kernel.cubin"])
    if not sass.ok:
        return {}, f"skipped: nvdisasm failed: {sass.stderr[-500:]}"
    opcodes = tc.count_opcodes(sass.stdout)
    ffma, hmma = opcodes.get("FFMA", 0) + opcodes.get("FFMA2", 0), opcodes.get("HMMA", 0)
    if ffma + hmma == 0:
        top = ", ".join(f"{op} x{n}" for op, n in opcodes.most_common(6))
        raise CandidateFailure(
            f"the compiled kernel has no FFMA or HMMA instruction: it does not multiply-accumulate A by B "
            f"({sum(opcodes.values())} instructions; top: {top})", {"resources": resources}, Status.REJECTED)
    return {"ffma": float(ffma), "hmma": float(hmma), "sass_instructions": float(sum(opcodes.values()))}, ""


# ---- stage 2: cpu_check (CPU emulation) ---------------------------------------------------------------------------

def _not_checkable(settings: Settings, why: str, artifacts: dict[str, str] | None = None) -> StageReport:
    """A kernel the emulator cannot run: said in the outcome (cpu_checked = 0), or rejected when required."""
    text = f"not checkable on CPU: {why}; correctness is checked on the GPU only"
    if settings.require_cpu_check:
        raise CandidateFailure(f"{text} (settings.toml requires the CPU check)", {"cpu_check": text, **(artifacts or {})},
                               Status.REJECTED)
    return StageReport({"cpu_checked": 0.0}, {"cpu_check": text, **(artifacts or {})})


def _build_failure(candidate: Candidate, settings: Settings, log: str) -> StageReport:
    """The emulator could not build the kernel: the candidate's fault if the CUDA compiler rejects it too."""
    if SIGNATURE_HELP.split(":")[0] in log or f"'{KERNEL}' was not declared" in log:
        raise CompileError(f"the kernel's signature is wrong: {SIGNATURE_HELP}",
                           {"emulator_build": tc.compiler_errors(log)})
    _device_compile(candidate, settings)
    features = src.not_emulated(candidate.code)
    reason = bd.first_error(log)
    why = (f"uses {', '.join(features)}, which the emulator lacks" if features else
           "the host emulator could not build it (a CUDA feature it lacks)") + (f" ({reason})" if reason else "")
    return _not_checkable(settings, why, {"emulator_build": tc.compiler_errors(log, 6000)})


def _build_emulator(candidate: Candidate, settings: Settings, compiler: str) -> StageReport | None:
    """Compile and link the kernel against the emulator in the sandbox; a report when it cannot be built."""
    prologue = emu.prologue(compiler, _device_table(settings, compiler).macros)
    (candidate.scratch / "emu_kernel.cpp").write_text(emu.emulation_unit(candidate.code, EMULATION_LAUNCHER, prologue))
    objects = emu.prebuilt_objects(compiler, EMU_SOURCES).verified()
    harness = stage_files(candidate.scratch, emu.EMU_HEADER, *objects)
    for argv in (emu.compile_command(compiler, "emu_kernel.cpp", harness, "emu_kernel.o"),
                 emu.link_command(compiler, ["emu_kernel.o", *(o.name for o in objects)], harness, "emu_matmul")):
        step = candidate.run(argv)
        if not step.ok:
            return _build_failure(candidate, settings, (step.stdout + step.stderr).strip())
    return None


def cpu_check(candidate: Candidate) -> StageReport:
    settings = load_settings(candidate.problem_root)
    shape = _screen(candidate, settings)
    compiler = tc.find_host_compiler()
    if compiler is None:
        return _not_checkable(settings, "no host C++ compiler (g++/clang++) here")
    note = _check_includes(candidate, settings, bd.stage_device_files(candidate.scratch))
    if never := src.never_emulated(candidate.code):
        return _not_checkable(settings, f"uses {', '.join(never)}")
    start = time.monotonic()
    failed = _build_emulator(candidate, settings, compiler)
    if failed is not None:
        return failed
    build_seconds = time.monotonic() - start
    rng = np.random.default_rng(candidate.seed)
    cases = [mc.make_case(rng, *dims) for dims in settings.cpu_shapes]
    names = []
    for i, case in enumerate(cases):
        # Blocks and threads run forward, in reverse or shuffled, case by case: a race shows whichever goes first.
        schedule = mc.schedule_code(mc.SCHEDULES[i % len(mc.SCHEDULES)], candidate.seed + i)
        mc.write_case_file(candidate.scratch / f"case_{i}.bin", case, shape, schedule)
        names.append(f"case_{i}.bin")
    start = time.monotonic()
    run = candidate.run(["./emu_matmul", *names])
    emulate_seconds = time.monotonic() - start
    done = run.stdout.count(" done")
    running = cases[done].label if done < len(cases) else ""
    if run.timed_out:
        raise CandidateTimeout(f"the emulated kernel did not finish (while running {running})")
    failure = emu.explain_run_failure(run, running)
    if failure is not None:
        raise CandidateFailure(failure.message, {"emulator_stderr": run.stderr[-4000:]}, failure.status)
    failures: list[str] = []
    worst = 0.0
    for i, case in enumerate(cases):
        try:
            out = mc.read_case_output(candidate.scratch / f"case_{i}.bin.out", case)
        except (OSError, ValueError) as exc:
            raise CandidateFailure(f"the emulator run left no usable output for {case.label}: {exc}") from None
        problems, case_worst = mc.check_case(case, out, settings.tolerance, emulated=True)
        worst = max(worst, case_worst)
        failures += [f"{case.label}: {p}" for p in problems]
    passed = [c.label for c in cases if not any(f.startswith(c.label + ":") for f in failures)]
    if failures:
        summary = f"wrong output on the CPU emulator: {failures[0]}"
        detail = "\n".join(failures[:20]) + f"\npassed: {', '.join(passed) or 'none'}"
        raise WrongOutput(summary, {"cpu_check": detail})
    artifacts = {"cpu_check": f"correct on {len(cases)} shapes, no data race: {', '.join(c.label for c in cases)}"}
    if note:
        artifacts["preprocessor"] = note
    return StageReport(
        {"cpu_checked": 1.0, "cpu_cases": float(len(cases)), "cpu_worst_error": worst,
         "emulator_build_seconds": build_seconds, "emulate_seconds": emulate_seconds}, artifacts)


# ---- stage 3: bench (1 GPU) ---------------------------------------------------------------------------------------

def _bench_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env["CUPY_TF32"] = "0"
    return env


def bench_compile_argv(candidate: Candidate, settings: Settings) -> tuple[str, list[str]]:
    """The compile stage's command for the bench, the architecture left for the bench to fill in (its GPU's)."""
    compiler = _device_compiler(settings)
    _device_unit(candidate)
    harness = bd.stage_device_files(candidate.scratch)
    return compiler.tool, bd.device_argv(compiler, UNIT, "kernel_bench.cubin", bd.ARCH_PLACEHOLDER, harness)


def run_bench_process(candidate: Candidate, job: dict[str, Any]) -> RunResult:
    """Run bench_matmul.py on the GPU, in the sandbox."""
    script = stage_files(candidate.scratch, BENCH_SCRIPT) / BENCH_SCRIPT.name
    return candidate.run([sys.executable, "-I", str(script)], input=json.dumps(job).encode(), env=_bench_env())


def bench_job(candidate: Candidate, settings: Settings, shape: src.LaunchShape
              ) -> tuple[dict[str, Any], list[tuple[Path, mc.MatmulCase]], list[tuple[Path, mc.MatmulCase]]]:
    """The bench script's job, and the case files it runs before and after timing (checked here afterwards)."""
    rng = np.random.default_rng(candidate.seed)

    def write(prefix: str, shapes: tuple[tuple[int, int, int], ...]) -> list[tuple[Path, mc.MatmulCase]]:
        written = []
        for i, dims in enumerate(shapes):
            case = mc.make_case(rng, *dims)
            path = candidate.scratch / f"{prefix}_{i}.bin"
            mc.write_case_file(path, case, shape)
            written.append((path, case))
        return written

    checks, rechecks = write("check", settings.check_shapes), write("recheck", settings.recheck_shapes)
    tool, argv = bench_compile_argv(candidate, settings)
    job = {
        "source": str(candidate.scratch / UNIT),
        "compile": {"tool": tool, "argv": argv, "cubin": str(candidate.scratch / "kernel_bench.cubin"),
                    "timeout": 120},
        "launch": {"threads": shape.threads, "block_m": shape.block_m, "block_n": shape.block_n,
                   "smem_bytes": shape.smem_bytes},
        "check_cases": [str(p) for p, _ in checks],
        "recheck_cases": [str(p) for p, _ in rechecks],
        "bench_shapes": [list(s) for s in settings.bench_shapes],
        "bench_guards": [mc.guard_elements(*s) for s in settings.bench_shapes],
        "warmups": settings.warmups,
        "repetitions": settings.repetitions,
        "flush_bytes": settings.flush_mb * 1024 * 1024,
        "sample_lines": settings.sample_lines,
        "tolerance": settings.tolerance,
        "device_seed": int(rng.integers(0, 2**31 - 1)),
        "poison_bits": mc.POISON_BITS,
        "input_guard_bits": mc.INPUT_GUARD_BITS,
        "result": str(candidate.scratch / "bench_result.json"),
    }
    return job, checks, rechecks


def bench(candidate: Candidate) -> StageReport:
    return bench_with(candidate, load_settings(candidate.problem_root))


def heldout(candidate: Candidate) -> StageReport:
    """The held-out stage: the bench at the ``[heldout]`` shapes, with fresh inputs and buffers (the candidate's seed
    here is the held-out one), every metric named ``heldout_*``."""
    report = bench_with(candidate, load_settings(candidate.problem_root).heldout())
    return StageReport({f"heldout_{k}": v for k, v in report.metrics.items()},
                       {f"heldout_{k}": v for k, v in (report.artifacts or {}).items()})


def bench_with(candidate: Candidate, settings: Settings) -> StageReport:
    shape = _screen(candidate, settings)
    _check_includes(candidate, settings, bd.stage_device_files(candidate.scratch))
    job, checks, rechecks = bench_job(candidate, settings, shape)
    run = run_bench_process(candidate, job)
    if run.timed_out:
        raise CandidateTimeout("the bench did not finish (a hanging kernel?)", {"stderr": run.stderr[-4000:]})
    report = _read_report(Path(job["result"]), run, checks, rechecks, settings)
    _check_cases(checks, settings.tolerance, BEFORE)
    _check_cases(rechecks, settings.tolerance, AFTER)
    metrics, artifacts = mc.judge_bench(report, [list(s) for s in settings.bench_shapes], settings.repetitions,
                                        settings.warmups, settings.tolerance)
    device = report.get("device") or {}
    build = report.get("build") or {}
    artifacts["device"] = f"{device.get('name', '?')} (sm_{device.get('major', '?')}{device.get('minor', '?')})"
    artifacts["cubin"] = (f"sha256 {build.get('cubin_sha256', '?')} ({build.get('tool', '?')}, {build.get('arch', '?')}, "
                          f"{' '.join(bd.DEVICE_OPTIONS)}; {build.get('registers', '?')} registers, "
                          f"{build.get('static_smem', '?')} B static shared memory, opt-in "
                          f"{build.get('opt_in_bytes', 0)} B)")
    return StageReport(metrics, artifacts)


def _read_report(path: Path, run: RunResult, checks: list[tuple[Path, mc.MatmulCase]],
                 rechecks: list[tuple[Path, mc.MatmulCase]], settings: Settings) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        reason = f"signal {run.signal}" if run.signal else f"exit status {run.returncode}"
        raise CandidateFailure(f"the bench process died without a report ({reason})",
                               {"stderr": run.stderr[-4000:]}) from None
    if not isinstance(report, dict):
        raise CandidateFailure("malformed bench report", status=Status.EVALUATOR_ERROR)
    if report.get("ok"):
        return report
    phase, error = str(report.get("phase", "?")), str(report.get("error", "unknown error"))
    artifacts = {"bench_error": f"{error}\n{report.get('traceback', '')}".strip(), "stderr": run.stderr[-2000:]}
    build = report.get("build") if isinstance(report.get("build"), dict) else {}
    if phase == "setup":
        raise CandidateFailure(f"GPU bench unavailable on this worker: {error}", artifacts, Status.SYSTEM_ERROR)
    if phase == "compile":
        log = str(build.get("log", ""))
        if build.get("tool") == "nvrtc" and build.get("returncode") == tc.NVRTC_UNUSABLE:
            raise CandidateFailure(f"NVRTC is unusable on this worker: {log[-1000:]}", artifacts, Status.SYSTEM_ERROR)
        failure = compile_failure(str(build.get("tool", "?")), str(build.get("arch", "?")), log or error)
        failure.artifacts.update(artifacts)
        raise failure
    if phase == "load":
        raise CandidateFailure(f"the GPU's driver could not load the kernel compiled by {build.get('tool', '?')} for "
                               f"{build.get('arch', '?')} ({error[:1000]}); a toolkit newer than the driver? Pin "
                               f"`compiler` in settings.toml or point EVOLVE_NVCC/EVOLVE_NVRTC at a matching one",
                               artifacts, Status.SYSTEM_ERROR)
    if phase == "launch":
        raise CandidateFailure(f"the kernel cannot be launched on this GPU: {error}", artifacts, Status.REJECTED)
    if report.get("wrong"):
        # The trusted side's own look at the case files it wrote gives the most detailed reason when one is there.
        for cases, when in ((checks, BEFORE), (rechecks, AFTER)):
            _check_cases([c for c in cases if Path(f"{c[0]}.out").is_file()], settings.tolerance, when)
        raise WrongOutput(f"wrong output on the GPU: {error[:2000]}", artifacts)
    raise CandidateFailure(f"CUDA error during {phase}: {error[:2000]}", artifacts, Status.RUNTIME_ERROR)


def _check_cases(cases: list[tuple[Path, mc.MatmulCase]], tolerance: float, when: str) -> None:
    for path, case in cases:
        try:
            out = mc.read_case_output(Path(f"{path}.out"), case)
        except (OSError, ValueError) as exc:
            raise CandidateFailure(f"no output for {case.label} {when}: {exc}", status=Status.EVALUATOR_ERROR) \
                from None
        problems, _ = mc.check_case(case, out, tolerance)
        if problems:
            raise WrongOutput(f"wrong output on the GPU, {case.label} {when}: {problems[0]}",
                              {"gpu_check": "\n".join(problems)})
