"""GPU correctness and timing of one matmul kernel against cuBLAS, with CuPy. Runs in the sandbox, one process per
candidate, so a sticky CUDA error or a hang ends this process only (the sandbox deadline kills a hung kernel).

Usage: python -I bench_matmul.py < job.json     (the trusted evaluator writes the job; see problems/matmul)

Every launch of the kernel is checked; no launch's result is taken on trust, so a kernel gains nothing by telling
checks from timed runs (by counting launches, reading clocks, recognising shapes or buffer addresses):
1. setup: CuPy and the device.
2. compile: the job's compile command, the compile stage's own (same tool, same flags) with this GPU's
   architecture, then that cubin is loaded as is (CuPy's compile options never apply). Shared memory is opted in
   when static + dynamic exceeds the 48 KiB default.
3. correctness, before any timing (the first wrong result ends the run): the trusted side's case files (every buffer
   goes back to it), then a full check at every timed shape.
4. timing: fresh inputs for every run, L2 flushed, CUDA events around the launch only, kernel and cuBLAS
   interleaved. After every kernel run, outside the events: the guard bands around A, B and C; A and B bit for bit
   against a regeneration from their seed (a kernel may not rewrite its inputs); poison and non-finite values over
   all of C; random rows and columns of C against float64 computed from the regenerated (pristine) inputs.
5. after timing: the full checks again (new seeds, new buffers), then the trusted side's recheck cases.

The reference is always computed after the kernel's launch has finished, from inputs regenerated or re-uploaded
from host data the kernel cannot reach, so a kernel that rewrites its inputs cannot make the reference agree.

Job keys: source, compile {tool, argv (with "{arch}"), cubin}, launch {threads, block_m, block_n, smem_bytes},
check_cases, recheck_cases, bench_shapes, bench_guards, warmups, repetitions, flush_bytes, sample_lines, tolerance,
device_seed, poison_bits, input_guard_bits, result. Case files use the emulator driver's layout (9 int64 header,
then A, B, C each between guard bands); outputs go to CASE.out in the same layout. The result file is JSON:
{"ok", "phase", "error", "wrong", "device", "build", "full_checks", "shapes": [...timings and checks]}.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HEADER_FIELDS = 9
DEFAULT_SHARED = 48 * 1024  # dynamic + static shared memory a kernel gets without opting in


class Stop(Exception):
    """Ends the run with a reported phase and message (not the kernel computing a wrong result)."""


class Wrong(Exception):
    """The kernel computed a wrong result (or touched what it must not): ends the run, reported as such."""


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
        "shared_optin_bytes": int(props.get("sharedMemPerBlockOptin", 0)),
    }


# ---- compile and load ----------------------------------------------------------------------------------------------

class Kernel:
    """The cubin built by the job's compile command, loaded as is; launches with the job's fixed launch shape."""

    def __init__(self, cp: Any, job: dict[str, Any], report: dict[str, Any]):
        self.cp = cp
        self.launch = job["launch"]
        device = report["device"]
        arch = f"sm_{device['major']}{device['minor']}"
        spec = job["compile"]
        argv = [part.replace("{arch}", arch) for part in spec["argv"]]
        build: dict[str, Any] = {"tool": spec["tool"], "arch": arch}
        report["build"] = build
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=float(spec.get("timeout", 120)),
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Stop(f"cannot run the {spec['tool']} compile: {exc}") from None
        build["log"] = (done.stdout + "\n" + done.stderr).strip()[-20000:]
        build["returncode"] = done.returncode
        cubin = Path(spec["cubin"])
        if done.returncode != 0 or not cubin.is_file():
            raise Stop(f"{spec['tool']} could not compile the kernel for {arch}")
        build["cubin_sha256"] = hashlib.sha256(cubin.read_bytes()).hexdigest()
        report["phase"] = "load"
        self.function = cp.RawModule(path=str(cubin)).get_function("matmul")
        static = int(self.function.shared_size_bytes)
        dynamic = int(self.launch["smem_bytes"])
        build.update(registers=int(self.function.num_regs), static_smem=static, dynamic_smem=dynamic,
                     max_threads=int(self.function.max_threads_per_block))
        report["phase"] = "launch"
        if int(self.launch["threads"]) > build["max_threads"]:
            raise Stop(f"THREADS={self.launch['threads']} exceeds the {build['max_threads']} threads per block this "
                       f"kernel can launch with on {arch} (registers: {build['registers']})")
        optin = int(device.get("shared_optin_bytes") or 0)
        if optin and static + dynamic > optin:
            raise Stop(f"{static} B static + {dynamic} B dynamic shared memory exceeds the {optin} B a block may use "
                       f"on this GPU")
        if static + dynamic > DEFAULT_SHARED:
            # Above the default the launch fails unless the kernel opts in to that much dynamic shared memory.
            self.function.max_dynamic_shared_size_bytes = dynamic
            build["opt_in_bytes"] = dynamic

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        return (-(-n // int(self.launch["block_n"])), -(-m // int(self.launch["block_m"])), 1)

    def __call__(self, a: Any, b: Any, c: Any, m: int, n: int, k: int) -> None:
        self.function(self.grid(m, n), (int(self.launch["threads"]), 1, 1),
                      (a, b, c, np.int32(m), np.int32(n), np.int32(k)), shared_mem=int(self.launch["smem_bytes"]))


# ---- buffers and checks --------------------------------------------------------------------------------------------

class Guarded:
    """A device buffer between guard bands of known bits; ``core`` is what the kernel is given."""

    def __init__(self, cp: Any, count: int, guard: int, guard_bits: int | np.ndarray):
        self.cp, self.count, self.guard = cp, count, guard
        if isinstance(guard_bits, np.ndarray):  # a whole host buffer, guards included (a case file's)
            self.full = cp.asarray(guard_bits)
            host = guard_bits.view(np.uint32)
            self.expected = (cp.asarray(host[:guard]), cp.asarray(host[guard + count:]))
        else:
            self.full = cp.empty(count + 2 * guard, dtype=cp.float32)
            self.full.view(cp.uint32).fill(guard_bits)
            self.expected = (guard_bits, guard_bits)
        self.core = self.full[guard:guard + count]

    def guard_damage(self) -> int:
        bits = self.full.view(self.cp.uint32)
        before, after = bits[:self.guard], bits[self.guard + self.count:]
        return int(self.cp.count_nonzero(before != self.expected[0])) + \
            int(self.cp.count_nonzero(after != self.expected[1]))


def uniform(cp: Any, seed: int, shape: tuple[int, int]) -> Any:
    """Inputs in [-1, 1) from a seed: regenerating them after a launch gives the pristine values back."""
    return cp.random.RandomState(seed).uniform(-1.0, 1.0, shape, dtype=cp.float32)


def normalized_error(cp: Any, got: Any, a64: Any, b64: Any) -> float:
    """max |C - A·B| / (|A|·|B|) over ``got`` (float32) against float64 from ``a64`` @ ``b64``; NaN counts as inf."""
    reference = cp.matmul(a64, b64)
    scale = cp.matmul(cp.abs(a64), cp.abs(b64))
    errors = cp.abs(got.astype(cp.float64) - reference) / cp.maximum(scale, 1e-30)
    errors = cp.where(cp.isfinite(errors), errors, cp.inf)
    return float(errors.max()) if errors.size else 0.0


def inspect(cp: Any, bufs: tuple[Guarded, Guarded, Guarded], pristine: tuple[Any, Any], m: int, n: int, k: int,
            poison_bits: int, lines: int | None, rng: np.random.Generator) -> dict[str, Any]:
    """Everything about one launch's result; ``lines``: check that many random rows and columns (None: all of C)."""
    a, b, c = bufs
    a0, b0 = pristine
    u32 = cp.uint32
    out = c.core.reshape(m, n)
    stats: dict[str, Any] = {
        "guards": a.guard_damage() + b.guard_damage() + c.guard_damage(),
        "inputs_changed": int(cp.count_nonzero(a.core.view(u32) != a0.ravel().view(u32))) +
        int(cp.count_nonzero(b.core.view(u32) != b0.ravel().view(u32))),
        "poisoned": int(cp.count_nonzero(c.core.view(u32) == u32(poison_bits))),
        "nonfinite": int(out.size - int(cp.count_nonzero(cp.isfinite(out)))),
    }
    a64, b64 = a0.reshape(m, k).astype(cp.float64), b0.reshape(k, n).astype(cp.float64)
    if lines is None:
        stats["max_error"] = normalized_error(cp, out, a64, b64)
    else:
        rows = cp.asarray(np.sort(rng.choice(m, size=min(lines, m), replace=False)))
        cols = cp.asarray(np.sort(rng.choice(n, size=min(lines, n), replace=False)))
        stats["max_error"] = max(normalized_error(cp, out[rows], a64[rows], b64),
                                 normalized_error(cp, out[:, cols], a64, b64[:, cols]))
    return stats


def problems(stats: dict[str, Any], tolerance: float) -> list[str]:
    found = []
    if stats["inputs_changed"]:
        found.append(f"the kernel changed {stats['inputs_changed']} element(s) of its inputs A and B")
    if stats["guards"]:
        found.append(f"the kernel wrote {stats['guards']} value(s) into the guard bands around A, B or C")
    if stats["poisoned"]:
        found.append(f"{stats['poisoned']} output(s) still hold the poison value C is pre-filled with")
    if stats["nonfinite"] > stats["poisoned"]:
        found.append(f"{stats['nonfinite'] - stats['poisoned']} output(s) are NaN or infinite")
    if not stats["max_error"] <= tolerance:
        found.append(f"outputs are off by {stats['max_error'] / tolerance:.3g}x the tolerance {tolerance:g}·|A||B| "
                     f"(reduced precision such as TF32/BF16 does not pass)")
    return found


def read_case(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    raw = np.fromfile(path, dtype="<i8", count=HEADER_FIELDS)
    m, n, k, guard = int(raw[0]), int(raw[1]), int(raw[2]), int(raw[8])
    data = np.fromfile(path, dtype="<f4", offset=HEADER_FIELDS * 8)
    sizes = (m * k + 2 * guard, k * n + 2 * guard, m * n + 2 * guard)
    if data.size != sum(sizes):
        raise Stop(f"case file {path.name} is malformed")
    return raw, [np.ascontiguousarray(x) for x in np.split(data, [sizes[0], sizes[0] + sizes[1]])]


class Bench:
    def __init__(self, cp: Any, kernel: Kernel, job: dict[str, Any]):
        self.cp, self.kernel, self.job = cp, kernel, job
        self.tolerance = float(job["tolerance"])
        self.poison = int(job["poison_bits"])
        self.input_guard = int(job["input_guard_bits"])
        self.rng = np.random.default_rng(int(job["device_seed"]) + 7)

    def sync(self) -> None:
        self.cp.cuda.Device().synchronize()

    def run_cases(self, paths: list[str], when: str) -> None:
        """The trusted side's cases in new buffers; every buffer is written back, then checked here too."""
        cp = self.cp
        for name in paths:
            path = Path(name)
            header, host = read_case(path)
            m, n, k, guard = int(header[0]), int(header[1]), int(header[2]), int(header[8])
            bufs = (Guarded(cp, m * k, guard, host[0]), Guarded(cp, k * n, guard, host[1]),
                    Guarded(cp, m * n, guard, host[2]))
            self.kernel(bufs[0].core, bufs[1].core, bufs[2].core, m, n, k)
            self.sync()
            with open(f"{path}.out", "wb") as fh:
                for buf in bufs:
                    fh.write(cp.asnumpy(buf.full).astype("<f4").tobytes())
            pristine = (cp.asarray(host[0][guard:guard + m * k]), cp.asarray(host[1][guard:guard + k * n]))
            found = problems(inspect(cp, bufs, pristine, m, n, k, self.poison, None, self.rng), self.tolerance)
            if found:
                raise Wrong(f"M={m} N={n} K={k} {when}: {found[0]}")

    def full_check(self, m: int, n: int, k: int, guard: int, seed: int, when: str) -> dict[str, Any]:
        """The kernel once at a timed shape in new buffers, every output checked against float64."""
        cp = self.cp
        bufs = (Guarded(cp, m * k, guard, self.input_guard), Guarded(cp, k * n, guard, self.input_guard),
                Guarded(cp, m * n, guard, self.poison))
        bufs[0].core[...] = uniform(cp, 2 * seed, (m, k)).ravel()
        bufs[1].core[...] = uniform(cp, 2 * seed + 1, (k, n)).ravel()
        self.sync()
        self.kernel(bufs[0].core, bufs[1].core, bufs[2].core, m, n, k)
        self.sync()
        pristine = (uniform(cp, 2 * seed, (m, k)), uniform(cp, 2 * seed + 1, (k, n)))
        stats = inspect(cp, bufs, pristine, m, n, k, self.poison, None, self.rng)
        found = problems(stats, self.tolerance)
        if found:
            raise Wrong(f"M={m} N={n} K={k}, full check {when} timing: {found[0]}")
        del bufs, pristine
        cp.get_default_memory_pool().free_all_blocks()
        return {"shape": [m, n, k], "when": when, **stats}

    def time_shape(self, index: int, m: int, n: int, k: int, guard: int) -> dict[str, Any]:
        """Interleaved, L2-flushed, event-timed runs of the kernel and of cuBLAS; every kernel run checked."""
        cp, job = self.cp, self.job
        f32 = cp.float32
        base = (int(job["device_seed"]) * 1_000_003 + index * 100_003) * 4
        bufs = (Guarded(cp, m * k, guard, self.input_guard), Guarded(cp, k * n, guard, self.input_guard),
                Guarded(cp, m * n, guard, self.poison))
        # cuBLAS works on its own buffers with its own values: no device buffer ever holds the kernel's answer.
        a2, b2, c2 = cp.empty((m, k), f32), cp.empty((k, n), f32), cp.empty((m, n), f32)
        flush = cp.empty(max(1, int(job["flush_bytes"]) // 4), dtype=f32)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        kernel_ms: list[float] = []
        cublas_ms: list[float] = []
        worst = {"max_error": 0.0, "poisoned": 0, "nonfinite": 0, "inputs_changed": 0, "guards": 0}
        cublas_error = float("nan")
        warmups, reps = int(job["warmups"]), int(job["repetitions"])
        lines = int(job["sample_lines"])
        for rep in range(warmups + reps):
            order = ("kernel", "cublas") if rep % 2 == 0 else ("cublas", "kernel")
            for which in order:
                seed = base + 4 * rep + (2 if which == "cublas" else 0)
                if which == "kernel":
                    x, y, z = bufs[0].core, bufs[1].core, bufs[2].core
                else:
                    x, y, z = a2.ravel(), b2.ravel(), c2.ravel()
                x[...] = uniform(cp, seed, (m, k)).ravel()
                y[...] = uniform(cp, seed + 1, (k, n)).ravel()
                z.view(cp.uint32).fill(self.poison)
                flush.fill(float(rep))
                self.sync()
                start.record()
                if which == "kernel":
                    self.kernel(x, y, z, m, n, k)
                else:
                    cp.matmul(a2, b2, out=c2)
                end.record()
                end.synchronize()
                elapsed = float(cp.cuda.get_elapsed_time(start, end))
                if rep >= warmups:
                    (kernel_ms if which == "kernel" else cublas_ms).append(elapsed)
                if which == "kernel":
                    pristine = (uniform(cp, seed, (m, k)), uniform(cp, seed + 1, (k, n)))
                    stats = inspect(cp, bufs, pristine, m, n, k, self.poison, lines, self.rng)
                    found = problems(stats, self.tolerance)
                    if found:
                        raise Wrong(f"M={m} N={n} K={k}, timed run {rep + 1} of {warmups + reps}: {found[0]}")
                    worst = {key: max(worst[key], stats[key]) for key in worst}
                    del pristine
                elif rep == warmups:  # the baseline once: cuBLAS in FP32 (CUPY_TF32=0) or the comparison is moot
                    a64 = uniform(cp, seed, (m, k)).astype(cp.float64)
                    b64 = uniform(cp, seed + 1, (k, n)).astype(cp.float64)
                    cublas_error = normalized_error(cp, c2, a64, b64)
                    del a64, b64
        del bufs, a2, b2, c2, flush
        cp.get_default_memory_pool().free_all_blocks()
        return {"shape": [m, n, k], "kernel_ms": kernel_ms, "cublas_ms": cublas_ms,
                "max_sample_error": worst["max_error"], "poisoned": worst["poisoned"],
                "nonfinite": worst["nonfinite"], "inputs_changed": worst["inputs_changed"], "guards": worst["guards"],
                "checked_runs": warmups + reps, "cublas_max_sample_error": cublas_error}


def run(job: dict[str, Any], report: dict[str, Any]) -> None:
    report["phase"] = "setup"
    cp = load_cupy()
    report["device"] = device_info(cp)
    report["phase"] = "compile"
    kernel = Kernel(cp, job, report)
    bench = Bench(cp, kernel, job)
    shapes = [(int(m), int(n), int(k)) for m, n, k in job["bench_shapes"]]
    guards = [int(g) for g in job["bench_guards"]]
    seed = int(job["device_seed"])
    report["phase"] = "correctness"
    bench.run_cases(job["check_cases"], "before timing")
    report["full_checks"] = [bench.full_check(*shape, guard, seed + 11 * i, "before")
                             for i, (shape, guard) in enumerate(zip(shapes, guards, strict=True))]
    report["phase"] = "timing"
    report["shapes"] = [bench.time_shape(i, *shape, guard)
                        for i, (shape, guard) in enumerate(zip(shapes, guards, strict=True))]
    report["phase"] = "recheck"
    report["full_checks"] += [bench.full_check(*shape, guard, seed + 11 * i + 5, "after")
                              for i, (shape, guard) in enumerate(zip(shapes, guards, strict=True))]
    bench.run_cases(job["recheck_cases"], "after timing (new inputs and buffers)")
    report["phase"] = "done"


def main() -> int:
    job = json.loads(sys.stdin.read())
    report: dict[str, Any] = {"ok": False, "phase": "start"}
    try:
        run(job, report)
        report["ok"] = True
    except Wrong as exc:
        report["wrong"] = True
        report["error"] = str(exc)
    except Stop as exc:
        report["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - CUDA errors (sticky or not) end this process, reported
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
    Path(job["result"]).write_text(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
