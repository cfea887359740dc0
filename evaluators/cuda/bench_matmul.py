"""GPU correctness and timing of one matmul kernel against cuBLAS, with CuPy. Runs in the sandbox, one process per
candidate, so a sticky CUDA error or a hang ends this process only (the sandbox deadline kills a hung kernel).

Usage: python -I bench_matmul.py < job.json     (the trusted evaluator writes the job; see problems/matmul)

The kernel never sees the host: inputs come from case files the trusted side wrote (its seed) and from a device
generator seeded by the job, and every output buffer goes back to the trusted side, which does the checking. Only
the timing loop checks on the spot (sampled outputs against float64), because its outputs stay on the GPU.

Job keys: source, launch {threads, block_m, block_n, smem_bytes}, options, check_cases, recheck_cases, bench_shapes,
warmups, repetitions, flush_bytes, samples, device_seed, poison_bits, result. Case files use the emulator driver's
layout (9 int64 header, then A, B, C each between guard bands); outputs go to CASE.out in the same layout.
The result file is JSON: {"ok", "phase", "error", "device", "baseline", "shapes": [...timings and sample checks]}.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HEADER_FIELDS = 9


class Stop(Exception):
    """Ends the run with a reported phase and message."""


def load_cupy() -> Any:
    os.environ["CUPY_TF32"] = "0"  # full FP32 cuBLAS baseline, whatever the caller's environment said
    try:
        import cupy
    except ImportError as exc:
        raise Stop(f"CuPy is not installed here ({exc}); install cupy-cuda12x on GPU workers") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - any driver/runtime failure means no usable GPU
        raise Stop(f"no usable CUDA device: {exc}") from None
    if count < 1:
        raise Stop("no CUDA device visible (CUDA_VISIBLE_DEVICES?)")
    return cupy


def device_info(cp: Any) -> dict[str, Any]:
    props = cp.cuda.runtime.getDeviceProperties(0)
    clock_khz = props.get("clockRate") or 0
    if not clock_khz:
        try:
            clock_khz = cp.cuda.Device(0).attributes.get("ClockRate", 0)
        except Exception:  # noqa: BLE001 - attribute missing in this CUDA version
            clock_khz = 0
    name = props.get("name", b"")
    return {
        "name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
        "major": int(props.get("major", 0)),
        "minor": int(props.get("minor", 0)),
        "sms": int(props.get("multiProcessorCount", 0)),
        "clock_khz": int(clock_khz),
        "l2_bytes": int(props.get("l2CacheSize", 0)),
    }


def read_case(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    raw = np.fromfile(path, dtype="<i8", count=HEADER_FIELDS)
    m, n, k, guard = int(raw[0]), int(raw[1]), int(raw[2]), int(raw[8])
    data = np.fromfile(path, dtype="<f4", offset=HEADER_FIELDS * 8)
    sizes = (m * k + 2 * guard, k * n + 2 * guard, m * n + 2 * guard)
    if data.size != sum(sizes):
        raise Stop(f"case file {path.name} is malformed")
    return raw, np.split(data, [sizes[0], sizes[0] + sizes[1]])


class Kernel:
    def __init__(self, cp: Any, job: dict[str, Any]):
        self.cp = cp
        self.launch = job["launch"]
        source = Path(job["source"]).read_text()
        self.kernel = cp.RawKernel(source, "matmul", options=tuple(job["options"]), backend="nvrtc")
        self.kernel.compile()
        smem = int(self.launch["smem_bytes"])
        if smem > 48 * 1024:  # above 48 KiB of dynamic shared memory a kernel must opt in
            self.kernel.max_dynamic_shared_size_bytes = smem

    def __call__(self, a: Any, b: Any, c: Any, m: int, n: int, k: int) -> None:
        grid = (-(-n // self.launch["block_n"]), -(-m // self.launch["block_m"]), 1)
        self.kernel(grid, (self.launch["threads"], 1, 1), (a, b, c, np.int32(m), np.int32(n), np.int32(k)),
                    shared_mem=int(self.launch["smem_bytes"]))


def run_cases(cp: Any, kernel: Kernel, paths: list[str]) -> None:
    """Run each case in new buffers (guards included) and write every buffer back for the trusted side."""
    for name in paths:
        path = Path(name)
        header, host = read_case(path)
        m, n, k, guard = int(header[0]), int(header[1]), int(header[2]), int(header[8])
        a, b, c = (cp.asarray(x) for x in host)
        kernel(a[guard:guard + m * k], b[guard:guard + k * n], c[guard:guard + m * n], m, n, k)
        cp.cuda.Device().synchronize()
        with open(f"{path}.out", "wb") as fh:
            for buf in (a, b, c):
                fh.write(cp.asnumpy(buf).astype("<f4").tobytes())
        del a, b, c


def sample_error(cp: Any, a: Any, b: Any, c: Any, rng: np.random.Generator, samples: int,
                 poison_bits: int) -> dict[str, float]:
    """Sampled |C - AB| / (|A||B|) against float64 on the host, plus poison and non-finite counts over all of C."""
    m, n = c.shape
    rows = cp.asarray(rng.integers(0, m, samples))
    cols = cp.asarray(rng.integers(0, n, samples))
    a_rows = cp.asnumpy(a[rows]).astype(np.float64)
    b_cols = cp.asnumpy(b[:, cols]).astype(np.float64)
    got = cp.asnumpy(c[rows, cols]).astype(np.float64)
    reference = np.einsum("sk,ks->s", a_rows, b_cols)
    scale = np.einsum("sk,ks->s", np.abs(a_rows), np.abs(b_cols))
    with np.errstate(invalid="ignore"):
        errors = np.abs(got - reference) / np.maximum(scale, 1e-30)
    errors = np.where(np.isfinite(errors), errors, np.inf)
    poisoned = int(cp.count_nonzero(c.view(cp.uint32) == cp.uint32(poison_bits)))
    nonfinite = int(c.size - int(cp.count_nonzero(cp.isfinite(c))))
    return {"max_error": float(errors.max()), "poisoned": poisoned, "nonfinite": nonfinite}


def time_shape(cp: Any, kernel: Kernel, job: dict[str, Any], index: int, m: int, n: int, k: int) -> dict[str, Any]:
    """Interleaved, L2-flushed, event-timed runs of the kernel and of cuBLAS, each on fresh inputs every time."""
    f32 = cp.float32
    device_rng = cp.random.RandomState(int(job["device_seed"]) + index)
    host_rng = np.random.default_rng(int(job["device_seed"]) + 1000 + index)
    poison_bits = int(job["poison_bits"])
    # Separate buffers for cuBLAS, holding different values: no device buffer ever holds the kernel's answer.
    a, b, c = cp.empty((m, k), f32), cp.empty((k, n), f32), cp.empty((m, n), f32)
    a2, b2, c2 = cp.empty((m, k), f32), cp.empty((k, n), f32), cp.empty((m, n), f32)
    flush = cp.empty(int(job["flush_bytes"]) // 4, dtype=f32)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    kernel_ms: list[float] = []
    cublas_ms: list[float] = []
    checks: list[dict[str, float]] = []
    baseline_checks: list[dict[str, float]] = []
    warmups, reps = int(job["warmups"]), int(job["repetitions"])
    for rep in range(warmups + reps):
        order = ("kernel", "cublas") if rep % 2 == 0 else ("cublas", "kernel")
        for which in order:
            x, y, z = (a, b, c) if which == "kernel" else (a2, b2, c2)
            x[...] = device_rng.uniform(-1.0, 1.0, x.shape, dtype=f32)
            y[...] = device_rng.uniform(-1.0, 1.0, y.shape, dtype=f32)
            z.view(cp.uint32).fill(poison_bits)
            flush.fill(float(rep))
            cp.cuda.Device().synchronize()
            start.record()
            if which == "kernel":
                kernel(x, y, z, m, n, k)
            else:
                cp.matmul(x, y, out=z)
            end.record()
            end.synchronize()
            elapsed = cp.cuda.get_elapsed_time(start, end)
            if rep >= warmups:
                (kernel_ms if which == "kernel" else cublas_ms).append(float(elapsed))
            if which == "kernel":
                checks.append(sample_error(cp, x, y, z, host_rng, int(job["samples"]), poison_bits))
            elif rep == warmups:
                baseline_checks.append(sample_error(cp, x, y, z, host_rng, int(job["samples"]), poison_bits))
    del a, b, c, a2, b2, c2, flush
    cp.get_default_memory_pool().free_all_blocks()
    return {
        "shape": [m, n, k],
        "kernel_ms": kernel_ms,
        "cublas_ms": cublas_ms,
        "max_sample_error": max(ch["max_error"] for ch in checks),
        "poisoned": max(ch["poisoned"] for ch in checks),
        "nonfinite": max(ch["nonfinite"] for ch in checks),
        "cublas_max_sample_error": max(ch["max_error"] for ch in baseline_checks),
    }


def run(job: dict[str, Any], report: dict[str, Any]) -> None:
    report["phase"] = "setup"
    cp = load_cupy()
    report["device"] = device_info(cp)
    report["phase"] = "compile"
    try:
        kernel = Kernel(cp, job)
    except Exception as exc:  # noqa: BLE001 - CompileException and friends: reported as the candidate's compile error
        raise Stop(f"{type(exc).__name__}: {exc}") from None
    report["phase"] = "correctness"
    run_cases(cp, kernel, job["check_cases"])
    report["phase"] = "timing"
    report["shapes"] = [time_shape(cp, kernel, job, i, *shape) for i, shape in enumerate(job["bench_shapes"])]
    report["phase"] = "recheck"
    run_cases(cp, kernel, job["recheck_cases"])
    report["phase"] = "done"


def main() -> int:
    job = json.loads(sys.stdin.read())
    report: dict[str, Any] = {"ok": False, "phase": "start"}
    try:
        run(job, report)
        report["ok"] = True
    except Stop as exc:
        report["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - CUDA errors (sticky or not) end this process, reported
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
    Path(job["result"]).write_text(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
