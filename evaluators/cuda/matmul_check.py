"""Trusted checks of matmul kernel outputs: inputs, poison, guard bands and a float64 reference.

Used for the CPU emulation and the GPU bench's case files (this module writes them and reads every buffer back) and
to judge the checks the bench script reports for its timed runs. The tolerance is relative to |A||B| (the sum of absolute
products) and sits between FP32 accumulation (about 1.5e-7 measured, any order) and TF32 / FP16 inputs
(above 2e-5 at K = 4096, far more at small K), so a reduced-precision shortcut cannot pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.cuda.source import LaunchShape
from evolve.candidate import CandidateFailure, WrongOutput
from evolve.types import Status

POISON_BITS = 0x7FC0FFEE  # C is pre-filled with this quiet NaN
INPUT_GUARD_BITS = 0x7FC0BAD1  # the guard bands around A and B hold this one
# x86 arithmetic keeps a NaN operand's payload, so on the CPU emulator a NaN output tells where it came from.
NAN_ORIGINS = {
    INPUT_GUARD_BITS: "computed from elements read outside A or B (an index past the end of a row or of the matrix)",
    0x7FFFFFFF: "computed from shared memory no thread had written yet (the emulator fills it with NaN before each "
                "block): a missing __syncthreads, or a tile element that is never loaded",
}
TOLERANCE = 2e-6
HEADER_FIELDS = 9


def poison(count: int, bits: int = POISON_BITS) -> np.ndarray:
    return np.full(count, bits, dtype=np.uint32).view(np.float32)


def guard_elements(m: int, n: int, k: int) -> int:
    """Guard band length (floats) on each side of a buffer: past any tile overhang, a multiple of 256 bytes."""
    return 64 * ((256 * max(m, n, k) + 4096 + 63) // 64)


@dataclass(frozen=True)
class MatmulCase:
    """One correctness case: fresh inputs drawn on the trusted side."""

    m: int
    n: int
    k: int
    a: np.ndarray  # float32 (m, k)
    b: np.ndarray  # float32 (k, n)

    @property
    def label(self) -> str:
        return f"M={self.m} N={self.n} K={self.k}"

    @property
    def guard(self) -> int:
        return guard_elements(self.m, self.n, self.k)

    def padded(self, data: np.ndarray) -> np.ndarray:
        """An input between guard bands (NaN with their own payload, so reads past the end poison the result)."""
        g = poison(self.guard, INPUT_GUARD_BITS)
        return np.concatenate([g, data.ravel(), g])


def make_case(rng: np.random.Generator, m: int, n: int, k: int) -> MatmulCase:
    a = rng.uniform(-1.0, 1.0, size=(m, k)).astype(np.float32)
    b = rng.uniform(-1.0, 1.0, size=(k, n)).astype(np.float32)
    return MatmulCase(m, n, k, a, b)


SCHEDULES = ("forward", "reverse", "shuffled")  # emu_matmul_main.cpp's order of blocks and threads


def schedule_code(schedule: str, seed: int = 0) -> int:
    """The case header's schedule field: the order's index in the low 2 bits, the shuffle's seed above them."""
    return SCHEDULES.index(schedule) | ((seed & 0xFFFFFFFF) << 2)


def write_case_file(path: Path, case: MatmulCase, shape: LaunchShape, schedule: int = 0) -> None:
    """The emulator driver's input: header, then A, B and a poisoned C, each between guard bands."""
    gx, gy, _ = shape.grid(case.m, case.n)
    header = np.array([case.m, case.n, case.k, gx, gy, shape.threads, shape.smem_bytes, schedule, case.guard],
                      dtype="<i8")
    with open(path, "wb") as fh:
        fh.write(header.tobytes())
        fh.write(case.padded(case.a).astype("<f4").tobytes())
        fh.write(case.padded(case.b).astype("<f4").tobytes())
        fh.write(poison(case.m * case.n + 2 * case.guard).astype("<f4").tobytes())


@dataclass(frozen=True)
class CaseOutput:
    a: np.ndarray  # full buffers, guards included, as the kernel left them
    b: np.ndarray
    c: np.ndarray


def read_case_output(path: Path, case: MatmulCase) -> CaseOutput:
    g = case.guard
    sizes = (case.m * case.k + 2 * g, case.k * case.n + 2 * g, case.m * case.n + 2 * g)
    data = np.fromfile(path, dtype="<f4")
    if data.size != sum(sizes):
        raise ValueError(f"{path.name}: expected {sum(sizes)} floats, found {data.size}")
    a, b, c = np.split(data, [sizes[0], sizes[0] + sizes[1]])
    return CaseOutput(a, b, c)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def _index(flat: int, cols: int) -> str:
    return f"[{flat // cols},{flat % cols}]"


def _guard_report(name: str, full: np.ndarray, expected: np.ndarray, guard: int, cols: int) -> list[str]:
    changed = np.flatnonzero(_bits(full) != _bits(expected))
    before = changed[changed < guard]
    after = changed[changed >= full.size - guard] - (full.size - guard)
    problems = []
    if before.size:
        problems.append(f"wrote {before.size} value(s) into the guard band before {name} (first at "
                        f"{guard - before.max()} element(s) before its start)")
    if after.size:
        row, col = divmod(int(after.min()) + (full.size - 2 * guard), cols)
        problems.append(f"wrote {after.size} value(s) into the guard band after {name} (first at element "
                        f"{int(after.min())} past its end: row {row}, column {col} in row-major order)")
    return problems


def normalized_errors(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """|C - A·B| / (|A|·|B|) elementwise, in float64 (a zero denominator compares against 1e-30)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    reference = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.abs(c.astype(np.float64) - reference) / np.maximum(scale, 1e-30)


def check_case(case: MatmulCase, out: CaseOutput, tolerance: float = TOLERANCE,
               emulated: bool = False) -> tuple[list[str], float]:
    """Every problem with one case's buffers, most telling first, and the max normalised error / tolerance.

    ``emulated``: the outputs come from the CPU emulator, where NaN payloads survive arithmetic (a GPU makes every
    NaN canonical), so NaN outputs can be traced to what they were computed from.
    """
    g, m, n, k = case.guard, case.m, case.n, case.k
    problems: list[str] = []
    for name, full, data, cols in (("A", out.a, case.a, k), ("B", out.b, case.b, n)):
        core = full[g:full.size - g]
        changed = np.flatnonzero(_bits(core) != _bits(data.ravel()))
        if changed.size:
            problems.append(f"the kernel wrote into input {name}: {changed.size} element(s) changed, first at "
                            f"{name}{_index(int(changed[0]), cols)}")
        problems += _guard_report(name, full, case.padded(data), g, cols)
    problems += _guard_report("C", out.c, poison(out.c.size), g, n)
    c = out.c[g:out.c.size - g].reshape(m, n)
    untouched = np.flatnonzero(_bits(c).ravel() == POISON_BITS)
    if untouched.size:
        problems.append(
            f"{untouched.size} of {m * n} output(s) still hold the poison value C is pre-filled with, first at "
            f"C{_index(int(untouched[0]), n)}: they were never written, or were computed from C's initial contents "
            f"(a kernel must not read C)")
    bits = _bits(c).ravel()
    nonfinite = np.flatnonzero(~np.isfinite(c).ravel() & (bits != POISON_BITS))
    if nonfinite.size:
        origins = [why for payload, why in NAN_ORIGINS.items()
                   if emulated and np.any((bits[nonfinite] & 0x7FFFFFFF) == payload)]
        problems.append(f"{nonfinite.size} output(s) are NaN or infinite, first at C{_index(int(nonfinite[0]), n)}"
                        + (f": {'; '.join(origins)}" if origins else ""))
    errors = normalized_errors(case.a, case.b, c)
    finite = np.isfinite(c)
    worst = float(np.max(errors[finite])) / tolerance if finite.any() else 0.0
    wrong = np.flatnonzero((errors > tolerance).ravel() & finite.ravel())
    if wrong.size:
        first = int(wrong[0])
        i, j = divmod(first, n)
        expected = float(case.a[i].astype(np.float64) @ case.b[:, j].astype(np.float64))
        problems.append(f"{wrong.size} of {m * n} output(s) are wrong (worst error {worst:.3g}x the tolerance "
                        f"{tolerance:g}·|A||B|), first at C[{i},{j}] = {float(c[i, j]):.7g}, expected {expected:.7g}")
    return problems, worst


# FP32 lanes per SM where they differ from 128 (compute capability -> lanes); used for the peak-rate bound.
FP32_LANES_PER_SM = {(6, 0): 64, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64}
PEAK_MARGIN = 1.05


def peak_fp32_flops(device: dict[str, Any]) -> float | None:
    """FMA peak of the device (2 flops per lane per cycle at the reported clock); ``None`` when unknown."""
    try:
        sms, clock_khz = int(device["sms"]), int(device["clock_khz"])
        lanes = FP32_LANES_PER_SM.get((int(device["major"]), int(device["minor"])), 128)
    except (KeyError, TypeError, ValueError):
        return None
    if sms <= 0 or clock_khz <= 0:
        return None
    return 2.0 * sms * lanes * clock_khz * 1e3


@dataclass(frozen=True)
class ShapeTiming:
    m: int
    n: int
    k: int
    kernel_ms: float  # median
    cublas_ms: float  # median
    best_kernel_ms: float

    @property
    def label(self) -> str:
        return f"{self.m}x{self.n}x{self.k}"

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    @property
    def fraction(self) -> float:
        return self.cublas_ms / self.kernel_ms


def _times(values: Any, what: str, expected: int) -> np.ndarray:
    times = np.asarray(values, dtype=np.float64)
    if times.ndim != 1 or times.size != expected or not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise ValueError(f"{what}: expected {expected} positive timings, got {values!r:.200}")
    return times


_CLEAN_FIELDS = ("inputs_changed", "guards", "poisoned", "nonfinite")


def _dirty(entry: dict[str, Any], tolerance: float) -> str:
    """What a reported check says is wrong ('' when clean); missing or malformed fields count as wrong."""
    found = []
    for name in _CLEAN_FIELDS:
        value = entry.get(name)
        if not isinstance(value, int | float) or value != 0:
            found.append(f"{name}={value!r}")
    error = entry.get("max_sample_error", entry.get("max_error"))
    if not isinstance(error, int | float) or not error <= tolerance:
        found.append(f"error {error!r} above the tolerance {tolerance:g}·|A||B|")
    return ", ".join(found)


def judge_bench(report: dict[str, Any], shapes: list[list[int]], repetitions: int, warmups: int = 0,
                tolerance: float = TOLERANCE) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics from a bench report after checking it: every timed run checked, full checks before and after timing at
    every timed shape, the peak-rate bound, the baseline.

    Raises ``WrongOutput`` for the kernel's faults and ``CandidateFailure(status=EVALUATOR_ERROR)`` when the baseline
    itself looks wrong (cuBLAS outside the FP32 tolerance means TF32 was on) or the report is incomplete.
    """
    measured = report.get("shapes")
    if not isinstance(measured, list) or len(measured) != len(shapes):
        raise CandidateFailure("bench report has no timings for the requested shapes", status=Status.EVALUATOR_ERROR)
    full = report.get("full_checks")
    for (m, n, k) in shapes:
        for when in ("before", "after"):
            entries = [e for e in full or [] if isinstance(e, dict) and e.get("shape") == [m, n, k]
                       and e.get("when") == when]
            if not entries:
                raise CandidateFailure(f"bench report lacks the full check at M={m} N={n} K={k} {when} timing",
                                       status=Status.EVALUATOR_ERROR)
            if problem := _dirty(entries[0], tolerance):
                raise WrongOutput(f"M={m} N={n} K={k}, full check {when} timing: {problem}")
    timings: list[ShapeTiming] = []
    for entry, (m, n, k) in zip(measured, shapes, strict=True):
        label = f"M={m} N={n} K={k}"
        if entry.get("checked_runs") != warmups + repetitions:
            raise CandidateFailure(f"{label}: the bench checked {entry.get('checked_runs')!r} of "
                                   f"{warmups + repetitions} timed runs", status=Status.EVALUATOR_ERROR)
        if problem := _dirty(entry, tolerance):
            raise WrongOutput(f"{label}, during timing: {problem} (reduced precision such as TF32/BF16 does not "
                              f"pass; inputs must stay unchanged)")
        if not float(entry.get("cublas_max_sample_error", np.inf)) <= tolerance:
            raise CandidateFailure(f"{label}: the cuBLAS baseline misses the FP32 tolerance; is TF32 enabled "
                                   f"(CUPY_TF32)?", status=Status.EVALUATOR_ERROR)
        try:
            kernel = _times(entry.get("kernel_ms"), f"{label} kernel", repetitions)
            cublas = _times(entry.get("cublas_ms"), f"{label} cuBLAS", repetitions)
        except ValueError as exc:
            raise CandidateFailure(f"malformed bench report: {exc}", status=Status.EVALUATOR_ERROR) from None
        timings.append(ShapeTiming(m, n, k, float(np.median(kernel)), float(np.median(cublas)), float(kernel.min())))
    device = report.get("device") or {}
    peak = peak_fp32_flops(device)
    best_cublas = max(t.flops / (t.cublas_ms * 1e-3) for t in timings)
    artifacts: dict[str, str] = {}
    if peak is not None and best_cublas <= peak * PEAK_MARGIN:
        bound, why = peak * PEAK_MARGIN, f"the device's FP32 peak ({peak / 1e12:.1f} TFLOP/s)"
    else:
        bound, why = 2.0 * best_cublas, "twice cuBLAS's rate (the device peak is unknown)"
        artifacts["peak"] = f"device peak unknown or below cuBLAS ({device!r:.300}); bounding by {why}"
    for t in timings:
        best = t.flops / (t.best_kernel_ms * 1e-3)
        if best > bound:
            raise WrongOutput(f"M={t.m} N={t.n} K={t.k}: {best / 1e12:.1f} TFLOP/s is above {why}: the timing "
                              f"cannot be real")
    metrics: dict[str, float] = {
        "cublas_fraction": float(np.exp(np.mean([np.log(t.fraction) for t in timings]))),
    }
    for t in timings:
        metrics[f"tflops_{t.label}"] = t.flops / (t.kernel_ms * 1e-3) / 1e12
        metrics[f"cublas_tflops_{t.label}"] = t.flops / (t.cublas_ms * 1e-3) / 1e12
        metrics[f"pct_cublas_{t.label}"] = 100.0 * t.fraction
        metrics[f"kernel_ms_{t.label}"] = t.kernel_ms
    if peak is not None:
        metrics["device_peak_tflops"] = peak / 1e12
    artifacts["timing"] = "\n".join(
        f"{t.label}: kernel {t.kernel_ms:.3f} ms ({t.flops / t.kernel_ms / 1e9:.2f} TFLOP/s), cuBLAS {t.cublas_ms:.3f} "
        f"ms, {100 * t.fraction:.1f}% of cuBLAS" for t in timings)
    return metrics, artifacts
