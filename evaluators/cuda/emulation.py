"""Building and running a kernel under the host emulator (cuda_emu.h), from the trusted side, in the sandbox.

The evaluator gives the kernel source and a few lines of problem-specific launcher code; this module turns them into
one translation unit (emulator header, then the prologue that gives it a device compile's macros, then the kernel),
compiles it with race instrumentation, links it with the fiber runtime, the race detector and a driver, and maps
the ways the run can end (deadlock, data race, undefined behaviour caught by the sanitizer, a crash) to messages.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from evaluators.cuda import HARNESS_DIR
from evaluators.cuda import device_macros as dm
from evaluators.cuda.source import rewrite_for_emulation
from evolve.sandbox.launcher import RunResult
from evolve.types import Status

EMU_HEADER = HARNESS_DIR / "cuda_emu.h"
EMU_RUNTIME = HARNESS_DIR / "emu_runtime.cpp"
EMU_RACE = HARNESS_DIR / "emu_race.cpp"
EXIT_DEADLOCK = 70  # emu_runtime.cpp
EXIT_LAUNCH = 71
EXIT_BAD_CASE = 72  # drivers
EXIT_RACE = 73  # emu_race.cpp
# Sanitizers catch what a GPU would fault on (misaligned vector loads) or silently get wrong (indexing past the end
# of a shared-memory array); -O1 keeps builds quick, the emulated shapes are small.
BUILD_FLAGS = ("-std=c++17", "-O1", "-g0", "-fsanitize=alignment,bounds", "-fno-sanitize-recover=all",
               "-Wno-unknown-pragmas")
# The kernel's unit only: every memory access calls emu_race.cpp's hooks. Linking without the flag keeps the
# ThreadSanitizer runtime out (the hooks are ours).
KERNEL_FLAGS = (*BUILD_FLAGS, "-fsanitize=thread")


def emulation_unit(code: str, appendix: str, prologue: str = "", filename: str = "program.cu") -> str:
    """The translation unit the host compiler sees; compiler messages keep the candidate's own line numbers."""
    return (f'#line 1 "evolve-prologue"\n{prologue}\n#line 1 "{filename}"\n{rewrite_for_emulation(code)}\n'
            f'#line 1 "evolve-launcher"\n{appendix}\n')


def compile_command(compiler: str, unit: str, harness: Path, output: str, flags: tuple[str, ...] = KERNEL_FLAGS
                    ) -> list[str]:
    """Compile the kernel's ``unit`` to an object, with the emulator header from ``harness`` (see ``staging``)."""
    return [compiler, *flags, "-include", str(harness / EMU_HEADER.name), f"-I{harness}", "-c", unit, "-o", output]


def link_command(compiler: str, parts: list[str], harness: Path, output: str, extra: tuple[str, ...] = ()
                 ) -> list[str]:
    """Link the kernel's object (in the cwd) with the harness objects ``parts`` staged in ``harness``."""
    return [compiler, *BUILD_FLAGS, *extra, parts[0], *(str(harness / part) for part in parts[1:]), "-o", output]


def emulator_macros(compiler: str) -> dict[str, str]:
    """The emulator's own macro table, as the kernel's unit sees it after the forced include (cached)."""
    return _emulator_macros(compiler, hashlib.sha256(EMU_HEADER.read_bytes()).hexdigest())


@functools.lru_cache(maxsize=4)
def _emulator_macros(compiler: str, header_digest: str) -> dict[str, str]:
    return dm.macro_table([compiler, *KERNEL_FLAGS, "-include", str(EMU_HEADER)])


def prologue(compiler: str, device: dict[str, str]) -> str:
    """What turns the emulator's preprocessor state into the device compile's ``device`` table."""
    return dm.emulator_prologue(emulator_macros(compiler), device, dm.keywords_defined_by(EMU_HEADER))


@dataclass(frozen=True)
class Prebuilt:
    """Objects of the harness's own sources, built once per process, outside any sandbox (no candidate input)."""

    objects: tuple[Path, ...]
    digests: tuple[str, ...]

    def verified(self) -> tuple[Path, ...]:
        """The objects, after checking that nothing rewrote them since they were built."""
        for path, digest in zip(self.objects, self.digests, strict=True):
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise RuntimeError(f"prebuilt emulator object {path} changed since it was built")
        return self.objects


_prebuilt: dict[tuple[str, ...], Prebuilt] = {}
_prebuilt_lock = threading.Lock()


def prebuilt_objects(compiler: str, sources: tuple[Path, ...], extra: tuple[str, ...] = ()) -> Prebuilt:
    """Compile the trusted harness ``sources`` (the fiber runtime, a driver) once per process and compiler.

    Only the candidate's own translation unit is compiled per candidate, in the sandbox; this halves the build.
    ``extra``: more flags (``-fPIC`` for a shared library).
    """
    key = (compiler, *BUILD_FLAGS, *extra,
           *(hashlib.sha256(p.read_bytes()).hexdigest() for p in (EMU_HEADER, HARNESS_DIR / "emu_internal.h",
                                                                   *sources)))
    with _prebuilt_lock:
        if key not in _prebuilt:
            folder = Path(tempfile.mkdtemp(prefix="evolve-emu-objects-"))
            objects = []
            for source in sources:
                target = folder / f"{source.stem}.o"
                subprocess.run([compiler, *BUILD_FLAGS, *extra, "-include", str(EMU_HEADER), "-c", str(source), "-o",
                                str(target)], check=True, capture_output=True, timeout=300)
                objects.append(target)
            digests = tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in objects)
            _prebuilt[key] = Prebuilt(tuple(objects), digests)
        return _prebuilt[key]


@atexit.register
def discard_prebuilt() -> None:
    """Remove this process's prebuilt objects (at exit; a long-lived worker keeps them until then)."""
    with _prebuilt_lock:
        for prebuilt in _prebuilt.values():
            if prebuilt.objects:
                shutil.rmtree(prebuilt.objects[0].parent, ignore_errors=True)
        _prebuilt.clear()


@dataclass(frozen=True)
class RunFailure:
    """Why an emulator run ended badly, as the status and message a stage reports."""

    status: Status
    message: str


def explain_run_failure(result: RunResult, case_label: str) -> RunFailure | None:
    """``None`` when the run succeeded; otherwise the reason, naming the case that was running."""
    if result.ok:
        return None
    stderr = result.stderr
    where = f" (while running {case_label})" if case_label else ""
    emu_line = next((line for line in stderr.splitlines() if line.startswith("evolve-emu:")), "")
    if result.returncode == EXIT_DEADLOCK:
        return RunFailure(Status.RUNTIME_ERROR, f"{emu_line.removeprefix('evolve-emu: ')}{where}")
    if result.returncode == EXIT_RACE:
        return RunFailure(Status.WRONG_OUTPUT, f"{emu_line.removeprefix('evolve-emu: ')}{where}")
    if result.returncode in (EXIT_LAUNCH, EXIT_BAD_CASE):
        return RunFailure(Status.RUNTIME_ERROR, f"emulator: {emu_line.removeprefix('evolve-emu: ')}{where}")
    sanitizer = next((line for line in stderr.splitlines() if "runtime error:" in line), "")
    if sanitizer:
        detail = sanitizer.split("runtime error:", 1)[1].strip()
        hint = ""
        if "misaligned" in detail:
            hint = ("; a GPU faults on this too: vector loads (float4) need 16-byte aligned addresses, which rows of "
                    "A or B only have when K or N is a multiple of 4")
        elif "out of bounds" in detail:
            hint = "; an index past the end of a fixed-size (e.g. shared-memory) array"
        return RunFailure(Status.RUNTIME_ERROR, f"undefined behaviour in the kernel: {detail}{hint}{where}")
    if result.signal is not None:
        name = signal.Signals(result.signal).name if result.signal in signal.Signals._value2member_map_ else \
            str(result.signal)
        if result.signal == signal.SIGSEGV:
            return RunFailure(Status.RUNTIME_ERROR,
                              f"the kernel crashed with {name}: a memory access far outside A, B and C (beyond the "
                              f"guard bands), or a thread's stack overflowed{where}")
        if result.signal == signal.SIGXCPU:
            return RunFailure(Status.TIMEOUT, f"the kernel used up its CPU time limit{where}")
        return RunFailure(Status.RUNTIME_ERROR, f"the kernel crashed with {name}{where}")
    return RunFailure(Status.RUNTIME_ERROR, f"the emulated run failed with exit status {result.returncode}{where}")
