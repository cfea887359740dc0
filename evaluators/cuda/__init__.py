"""CUDA kernel evaluation: trusted helpers for problem evaluators, and files that run inside the sandbox.

Trusted (imported by a problem's evaluator, never given candidate control): ``source`` (reading and policing kernel
source text, a lint), ``include_check`` (the headers the preprocessor really opens), ``build`` (the one device
compile: tool, flags, include path), ``toolchain`` (finding nvcc / NVRTC / nvdisasm, parsing their reports),
``device_macros`` (the device compile's macro table), ``emulation`` (building and running the CPU emulation of a
kernel, sandboxed), ``matmul_check`` (judging output buffers and bench reports), ``staging`` (copying the files
below into a candidate's scratch dir, the only place its sandbox can read them).

Run inside the sandbox (data they produce is checked by the trusted side): ``cuda_emu.h`` + ``emu_runtime.cpp``
(host emulation of CUDA blocks as fibers) + ``emu_race.cpp`` (its race detector), ``emu_matmul_main.cpp`` (CPU check
driver for matmul kernels), ``nvrtc_compile.py`` (NVRTC through ctypes) with ``include/`` (its ``<cstdint>``),
``bench_matmul.py`` (CuPy correctness and timing).
"""

from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parent
