"""Test stand-in evaluator (copied next to problems/matmul's evaluator.py in a copy of the problem): the real stages,
with the GPU of the bench stage replaced by the CPU emulator and the CuPy stand-in of this folder.

Only two hooks change: the bench's compile command builds the kernel, emulated, as a shared library where the cubin
would be, and the bench process runs standin_runner.py (which loads the real bench_matmul.py with the stand-in
CuPy). The job, the bench script, the report and its judging are the real ones.
"""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("matmul_evaluator_base", Path(__file__).with_name("evaluator.py"))
_base = sys.modules["matmul_evaluator_base"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
compile, cpu_check, bench = _base.compile, _base.cpu_check, _base.bench

STANDIN = Path(__file__).with_name("standin")
PIC_FLAGS = ("-fPIC", "-fno-sanitize=all")


def bench_compile_argv(candidate, settings):
    from evaluators.cuda import emulation as emu
    from evaluators.cuda import toolchain as tc
    from evaluators.cuda.staging import stage_files

    compiler = tc.find_host_compiler()
    prologue = emu.prologue(compiler, _base._device_table(settings, compiler).macros)
    unit = candidate.scratch / "standin_kernel.cpp"
    unit.write_text(emu.emulation_unit(candidate.code, _base.EMULATION_LAUNCHER, prologue))
    objects = emu.prebuilt_objects(compiler, (emu.EMU_RUNTIME, emu.EMU_RACE), PIC_FLAGS).verified()
    harness = stage_files(candidate.scratch, emu.EMU_HEADER, *objects)
    # -Bsymbolic: the kernel's clock() is the emulator's cycle counter, not the C library's.
    argv = [compiler, "-std=c++17", "-O1", "-g0", "-Wno-unknown-pragmas", *PIC_FLAGS, "-shared", "-Wl,-Bsymbolic",
            "-include", str(harness / emu.EMU_HEADER.name), f"-I{harness}", unit.name,
            *(str(harness / o.name) for o in objects), "-o", str(candidate.scratch / "kernel_bench.cubin")]
    return "emulator", argv


def run_bench_process(candidate, job):
    import json

    from evaluators.cuda.staging import stage_files

    harness = stage_files(candidate.scratch, _base.BENCH_SCRIPT, *sorted(STANDIN.glob("standin_*.py")))
    return candidate.run([sys.executable, "-I", str(harness / "standin_runner.py")], input=json.dumps(job).encode())


_base.bench_compile_argv = bench_compile_argv
_base.run_bench_process = run_bench_process
