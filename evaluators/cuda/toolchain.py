"""Finding the CUDA tools (nvcc, NVRTC, nvdisasm) and reading what they report, on the trusted side.

Nothing here runs candidate code or compiles it: evaluators build command lines with these helpers and run them
through ``Candidate.run`` (sandboxed), then parse the text that comes back.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from evaluators.cuda import HARNESS_DIR

# Shared memory one block may use (static + dynamic), bytes, by architecture; unknown ones get the smallest.
MAX_SHARED_BYTES = {
    "sm_70": 96 * 1024, "sm_72": 96 * 1024, "sm_75": 64 * 1024, "sm_80": 163 * 1024, "sm_86": 99 * 1024,
    "sm_87": 163 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024, "sm_100": 227 * 1024, "sm_103": 227 * 1024,
    "sm_120": 99 * 1024,
}
REGISTER_FILE = 65536  # 32-bit registers per SM on every architecture since Kepler
REGISTER_ALLOCATION_UNIT = 256  # registers are allocated per warp in units of this many


def max_shared_bytes(arch: str) -> int:
    return MAX_SHARED_BYTES.get(arch.removesuffix("a"), 64 * 1024)


def nvidia_package_dirs() -> list[Path]:
    """Folders of the ``nvidia`` namespace package from the PyPI CUDA wheels (found without importing them)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def _first_existing(paths: list[Path]) -> str | None:
    for path in paths:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def find_nvcc() -> str | None:
    """``$EVOLVE_NVCC``, else /usr/local/bin/nvcc, else nvcc on PATH, else the usual CUDA install folders."""
    if os.environ.get("EVOLVE_NVCC"):
        return os.environ["EVOLVE_NVCC"]
    candidates = [Path("/usr/local/bin/nvcc")]
    which = shutil.which("nvcc")
    if which:
        candidates.append(Path(which))
    candidates += [Path("/usr/local/cuda/bin/nvcc"), *sorted(Path("/usr/local").glob("cuda-*/bin/nvcc"), reverse=True)]
    return _first_existing(candidates)


def find_nvrtc() -> str | None:
    """``libnvrtc.so`` from the ``nvidia-cuda-nvrtc*`` wheels or a CUDA install."""
    if os.environ.get("EVOLVE_NVRTC"):
        return os.environ["EVOLVE_NVRTC"]
    found: list[Path] = []
    for base in nvidia_package_dirs():
        found += sorted(base.glob("*/lib/libnvrtc.so*"))
    found += sorted(Path("/usr/local").glob("cuda*/lib64/libnvrtc.so*"))
    for path in found:
        if "builtins" not in path.name and ".alt." not in path.name:
            return str(path)
    return None


def find_disassembler() -> str | None:
    """``nvdisasm`` (prints SASS of a cubin) from PATH, the CUDA install or the ``nvidia-cuda-nvdisasm`` wheel."""
    if os.environ.get("EVOLVE_NVDISASM"):
        return os.environ["EVOLVE_NVDISASM"]
    candidates = []
    which = shutil.which("nvdisasm")
    if which:
        candidates.append(Path(which))
    nvcc = find_nvcc()
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent / "nvdisasm")
    candidates.append(Path("/usr/local/cuda/bin/nvdisasm"))
    for base in nvidia_package_dirs():
        candidates += sorted(base.glob("*/bin/nvdisasm"), reverse=True)
    return _first_existing(candidates)


def find_host_compiler() -> str | None:
    for name in ("g++", "c++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


NVRTC_SCRIPT = HARNESS_DIR / "nvrtc_compile.py"
NVRTC_UNUSABLE = 2  # exit status of nvrtc_compile.py when NVRTC itself cannot be used (not the source's fault)

NO_COMPILER_HELP = ("no CUDA compiler found: install the CUDA toolkit (nvcc) or `pip install nvidia-cuda-nvrtc-cu12 "
                    "nvidia-cuda-runtime-cu12 nvidia-cuda-nvcc-cu12` (NVRTC and the CUDA headers); set EVOLVE_NVCC or "
                    "EVOLVE_NVRTC to point at one")


@dataclass(frozen=True)
class KernelResources:
    """What ptxas reports for one entry function."""

    registers: int = 0
    shared_bytes: int = 0  # static shared memory
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_bytes: int = 0
    barriers: int = 0

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes


_ENTRY_RE = re.compile(r"Compiling entry function '([^']+)'")
_PROPS_RE = re.compile(r"Function properties for (\S+)")
_FRAME_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED_RE = re.compile(r"Used (\d+) registers")
_SMEM_RE = re.compile(r"(\d+) bytes smem")
_BARRIERS_RE = re.compile(r"used (\d+) barriers")


def parse_ptxas_report(log: str) -> dict[str, KernelResources]:
    """Resources per entry function from ``ptxas -v`` output (nvcc's or NVRTC's log)."""
    values: dict[str, dict[str, int]] = {}
    entry = props = None
    for line in log.splitlines():
        if match := _ENTRY_RE.search(line):
            entry = match.group(1)
            values.setdefault(entry, {})
        elif match := _PROPS_RE.search(line):
            props = match.group(1)
        elif (match := _FRAME_RE.search(line)) and props is not None and props in values:
            values[props].update(stack_bytes=int(match.group(1)), spill_store_bytes=int(match.group(2)),
                                 spill_load_bytes=int(match.group(3)))
        elif (match := _USED_RE.search(line)) and entry is not None:
            values[entry]["registers"] = int(match.group(1))
            if smem := _SMEM_RE.search(line):
                values[entry]["shared_bytes"] = int(smem.group(1))
            if bars := _BARRIERS_RE.search(line):
                values[entry]["barriers"] = int(bars.group(1))
    return {name: KernelResources(**fields) for name, fields in values.items()}


def registers_fit(registers: int, threads: int) -> bool:
    """Whether one block of ``threads`` threads with ``registers`` each fits the register file of one SM."""
    per_warp = math.ceil(registers * 32 / REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT
    return per_warp * math.ceil(threads / 32) <= REGISTER_FILE


_SASS_RE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)(?:\.[A-Z0-9_.]+)?\b")


def count_opcodes(sass: str) -> Counter[str]:
    """Instruction counts by base opcode (``FFMA.FTZ`` counts as ``FFMA``) in nvdisasm/cuobjdump output."""
    return Counter(match.group(1) for match in _SASS_RE.finditer(sass))


def compiler_errors(log: str, limit: int = 12000) -> str:
    """The compiler log bounded for a prompt; when too long, the error lines first, then the log's end."""
    log = log.strip()
    if len(log) <= limit:
        return log
    errors = "\n".join(line for line in log.splitlines() if "error" in line.lower())[: limit // 2]
    return f"{errors}\n... (log truncated) ...\n{log[-(limit - len(errors)):]}"
