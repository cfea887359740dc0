"""The one device compile: the tool, flags and include path shared by the compile stage and the GPU bench.

The compile stage measures a kernel (registers, shared memory, SASS) from a cubin built with ``device_argv``; the
bench builds its cubin with the very same argv, only the architecture swapped for the GPU it runs on, and loads that
cubin as is (no CuPy compile options apply). On a GPU of the compile stage's architecture the two cubins are
byte-identical (nvcc and NVRTC are deterministic; both stages record the cubin's SHA-256).

Floating-point flags are spelled out rather than left to defaults, so no wrapper can slip in its own (CuPy adds
``-ftz=true``): denormals kept, IEEE division and square root, FMA contraction on (what nvcc does by default).

NVRTC ships no headers. Its include path is this package's ``include/`` (``<cstdint>``/``<stdint.h>`` for device
code) followed by the CUDA headers of a toolkit or of the ``nvidia-cuda-runtime-cu12`` + ``nvidia-cuda-nvcc-cu12``
wheels, so every allowed header compiles with either tool.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluators.cuda import HARNESS_DIR
from evaluators.cuda import toolchain as tc
from evaluators.cuda.staging import stage_files

DEVICE_OPTIONS = ("-std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true")
NVRTC_SHIMS = HARNESS_DIR / "include"
ARCH_PLACEHOLDER = "{arch}"  # the bench replaces it with its GPU's architecture
# Headers NVRTC must find for the allowlist: the CUDA ones live in a toolkit or in the wheels.
_CUDA_HEADERS = ("cuda_fp16.h", "cuda_bf16.h", "mma.h", "crt/mma.h", "cuda_pipeline.h")


@dataclass(frozen=True)
class DeviceCompiler:
    """Which compiler builds device code here; ``include_dirs`` matters for NVRTC only (nvcc finds its own)."""

    tool: str  # "nvcc" or "nvrtc"
    path: str  # the nvcc executable or libnvrtc.so
    include_dirs: tuple[str, ...] = ()


def cuda_include_dirs() -> tuple[str, ...]:
    """CUDA header folders for NVRTC: a toolkit's (next to nvcc, $CUDA_PATH, /usr/local/cuda) or the wheels'."""
    roots = []
    nvcc = tc.find_nvcc()
    if nvcc:
        roots.append(Path(os.path.realpath(nvcc)).parent.parent / "include")
    for variable in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(variable):
            roots.append(Path(os.environ[variable]) / "include")
    roots.append(Path("/usr/local/cuda/include"))
    for root in roots:
        if all((root / header).is_file() for header in _CUDA_HEADERS):
            return (str(root),)
    # The wheels split the headers: cuda_runtime has cuda_fp16.h, mma.h...; cuda_nvcc has crt/mma.h.
    found: list[str] = []
    for base in tc.nvidia_package_dirs():
        for name in ("cuda_runtime", "cuda_nvcc", "cu13"):
            folder = base / name / "include"
            if folder.is_dir() and str(folder) not in found:
                found.append(str(folder))
    if all(any((Path(d) / header).is_file() for d in found) for header in _CUDA_HEADERS):
        return tuple(found)
    return ()


def find_device_compiler(prefer: str = "auto") -> DeviceCompiler | None:
    """nvcc when present (or asked for), else NVRTC; ``None`` when neither exists."""
    if prefer not in ("auto", "nvcc", "nvrtc"):
        raise ValueError(f"compiler must be auto, nvcc or nvrtc, not {prefer!r}")
    nvcc = tc.find_nvcc() if prefer in ("auto", "nvcc") else None
    if nvcc:
        return DeviceCompiler("nvcc", nvcc)
    nvrtc = tc.find_nvrtc() if prefer in ("auto", "nvrtc") else None
    if nvrtc:
        return DeviceCompiler("nvrtc", nvrtc, cuda_include_dirs())
    return None


def device_argv(compiler: DeviceCompiler, source: str, cubin: str, arch: str, harness: Path) -> list[str]:
    """The compile command (ptxas -v resource report included). ``harness``: the staged copy of this package's
    sandbox files (``stage_device_files``), which the sandbox can read."""
    if compiler.tool == "nvcc":
        return [compiler.path, f"-arch={arch}", "-cubin", "-Xptxas", "-v", *DEVICE_OPTIONS, "-o", cubin, source]
    includes = [f"-I{harness / NVRTC_SHIMS.name}", *(f"-I{d}" for d in compiler.include_dirs)]
    return [sys.executable, "-I", str(harness / tc.NVRTC_SCRIPT.name), "--library", compiler.path, "--output", cubin,
            source, "--", f"-arch={arch}", "--ptxas-options=-v", *DEVICE_OPTIONS, *includes]


def stage_device_files(scratch: Path) -> Path:
    """Copy what ``device_argv`` reads (the NVRTC driver and its headers) into the scratch dir; returns the harness."""
    stage_files(scratch, *sorted(p for p in NVRTC_SHIMS.iterdir() if p.is_file()), into=NVRTC_SHIMS.name)
    return stage_files(scratch, tc.NVRTC_SCRIPT)


_ERROR_RE = re.compile(r"(?i)\b(?:catastrophic error|error)\b")


def first_error(log: str, limit: int = 400) -> str:
    """The compiler's own first error line (with the next line when it holds the detail), for a one-line message."""
    lines = [line.rstrip() for line in log.splitlines()]
    for i, line in enumerate(lines):
        if _ERROR_RE.search(line) and "errors detected" not in line and "error detected" not in line:
            text = line.strip()
            if text.endswith(":") and i + 1 < len(lines):
                text += " " + lines[i + 1].strip()
            return text[:limit]
    return ""
