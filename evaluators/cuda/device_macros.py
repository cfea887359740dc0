"""The preprocessor state of a device compile, so that the CPU emulator and the include check see what nvcc sees.

A kernel that tests ``#ifdef __CUDA_ARCH__`` (or ``__OPTIMIZE__``, ``CUDART_VERSION``, ``INT32_MAX``...) must take the
same branch under the emulator as on the GPU. nvcc's device pass is the host preprocessor run with a few ``-D``
flags and ``-include cuda_runtime.h`` (``nvcc --dryrun`` prints that command), so its macro table can be read
exactly with ``-dM``; so can the emulator's. The difference becomes a prologue placed between the emulator's header
and the kernel: macros only the emulator has are undefined, the device compile's are defined. The emulator's own
CUDA keywords (``__global__``, ``__shared__``...) keep their emulator meaning.

With NVRTC only (no nvcc), the table is NVRTC's documented macros on top of the host compiler's own: approximate.
Everything here runs trusted, on the evaluator's side, with no candidate input; results are cached per process.
"""

from __future__ import annotations

import ctypes
import functools
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_DEFINE_RE = re.compile(r"#define (\w+)(\([^)]*\))?(?: (.*))?$")
# Predefined names a program may not #undef or #define (the compiler refuses or warns).
_UNTOUCHABLE = frozenset({"__cplusplus", "__STDC__", "__STDC_HOSTED__", "__FILE__", "__LINE__", "__DATE__",
                          "__TIME__", "__COUNTER__", "__TIMESTAMP__", "__BASE_FILE__", "__INCLUDE_LEVEL__",
                          "__has_include", "__has_include_next", "__GCC_IEC_559", "__GCC_IEC_559_COMPLEX"})


def arch_number(arch: str) -> int:
    """``sm_90`` / ``sm_90a`` / ``compute_90`` -> 900 (the value of ``__CUDA_ARCH__``)."""
    match = re.search(r"(\d+)", arch)
    if not match:
        raise ValueError(f"not a CUDA architecture: {arch!r}")
    return int(match.group(1)) * 10


def macro_table(argv: list[str], timeout: float = 60) -> dict[str, str]:
    """``{name: '#define ...' line}`` of every macro defined after preprocessing an empty file with ``argv``."""
    result = subprocess.run([*argv, "-dM", "-E", "-x", "c++", "/dev/null"], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} -dM failed: {result.stderr.strip()[-2000:]}")
    table = {}
    for line in result.stdout.splitlines():
        match = _DEFINE_RE.match(line)
        if match:
            table[match.group(1)] = line
    return table


def nvcc_device_pass(nvcc: str, arch: str, options: tuple[str, ...]) -> list[str]:
    """The host-preprocessor command nvcc's device pass runs (from ``--dryrun``), without its input and output."""
    with tempfile.TemporaryDirectory(prefix="evolve-dryrun-") as folder:
        source = Path(folder) / "probe.cu"
        source.write_text("\n")
        result = subprocess.run([nvcc, f"-arch={arch}", "-cubin", *options, "--dryrun", str(source)],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    for line in (result.stderr + result.stdout).splitlines():
        if "-D__CUDA_ARCH__=" in line and " -E " in line:
            argv = shlex.split(line.removeprefix("#$ "))
            if "-o" in argv:
                at = argv.index("-o")
                del argv[at:at + 2]
            return [a for a in argv if a != str(source) and a not in ("-E",) and a != "-x" and a != "c++"]
    raise RuntimeError(f"nvcc --dryrun shows no device preprocessing step: {result.stderr.strip()[-2000:]}")


def nvrtc_version(library: str) -> tuple[int, int] | None:
    try:
        lib = ctypes.CDLL(library)
        major, minor = ctypes.c_int(), ctypes.c_int()
        if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
            return None
        return major.value, minor.value
    except (OSError, AttributeError):
        return None


def nvrtc_defines(arch: str, version: tuple[int, int] | None) -> dict[str, str]:
    """The macros NVRTC documents for a device compile."""
    number = arch_number(arch)
    defines = {"__CUDACC__": "1", "__CUDACC_RTC__": "1", "__CUDA_ARCH__": str(number),
               "__CUDA_ARCH_LIST__": str(number)}
    if version is not None:
        defines["__CUDACC_VER_MAJOR__"], defines["__CUDACC_VER_MINOR__"] = str(version[0]), str(version[1])
    return {name: f"#define {name} {value}" for name, value in defines.items()}


@functools.lru_cache(maxsize=4)
def host_table(host_compiler: str) -> dict[str, str]:
    """The host compiler's own predefined macros in C++17 mode (cached per process)."""
    return macro_table([host_compiler, "-std=c++17"])


@dataclass(frozen=True)
class DeviceTable:
    """A device compile's macros; ``note`` says why they are only approximate (empty when read from the compiler)."""

    macros: dict[str, str]
    note: str = ""


@functools.lru_cache(maxsize=8)
def device_table(host_compiler: str, tool: str, tool_path: str, arch: str, options: tuple[str, ...]) -> DeviceTable:
    """Every macro a device compile of this tool predefines (cached per process).

    When nvcc's device pass cannot be read (a wrapper without ``--dryrun``...), the host compiler's own macros plus
    the CUDA ones nvcc always defines, with a note saying so.
    """
    if tool == "nvcc":
        try:
            return DeviceTable(macro_table(nvcc_device_pass(tool_path, arch, options)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            basic = {name: f"#define {name} {value}" for name, value in
                     (("__CUDACC__", "1"), ("__NVCC__", "1"), ("__CUDA_ARCH__", str(arch_number(arch))),
                      ("__CUDA_ARCH_LIST__", str(arch_number(arch))))}
            return DeviceTable({**host_table(host_compiler), **basic},
                               f"approximate device macros (nvcc's device pass could not be read: {exc})")
    return DeviceTable({**host_table(host_compiler), **nvrtc_defines(arch, nvrtc_version(tool_path))},
                       "approximate device macros (NVRTC's documented ones; no nvcc to read a device pass from)")


def emulator_prologue(emulator: dict[str, str], device: dict[str, str], keep: frozenset[str]) -> str:
    """Lines that turn the emulator's macro table (``emulator``) into the device compile's (``device``).

    ``keep``: macros the emulator defines on purpose (its CUDA keywords); they keep the emulator's meaning.
    """
    lines = []
    for name in sorted(emulator):
        if name in keep or name in _UNTOUCHABLE or emulator[name] == device.get(name):
            continue
        lines.append(f"#undef {name}")
        if name in device:
            lines.append(device[name])
    for name in sorted(set(device) - set(emulator) - keep - _UNTOUCHABLE):
        lines.append(device[name])
    return "\n".join(lines) + "\n"


def defines_header(host: dict[str, str], device: dict[str, str]) -> str:
    """A header that gives a plain host preprocessor (``host`` table) the device compile's macros (for -include)."""
    lines = []
    for name in sorted(device):
        if name in _UNTOUCHABLE or host.get(name) == device[name]:
            continue
        if name in host:
            lines.append(f"#undef {name}")
        lines.append(device[name])
    for name in sorted(set(host) - set(device) - _UNTOUCHABLE):
        lines.append(f"#undef {name}")
    return "\n".join(lines) + "\n"


def keywords_defined_by(header: Path) -> frozenset[str]:
    """Names a header ``#define``s at top level (the emulator's CUDA keywords), helpers it #undefs excluded."""
    text = header.read_text()
    defined = set(re.findall(r"(?m)^\s*#\s*define\s+(\w+)", text))
    return frozenset(defined - set(re.findall(r"(?m)^\s*#\s*undef\s+(\w+)", text)))
