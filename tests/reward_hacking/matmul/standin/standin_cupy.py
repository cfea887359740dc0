"""A CPU stand-in for the part of CuPy that bench_matmul.py uses, defined by the tests (not shipped).

NumPy arrays play device memory; the "GPU" is the CPU emulator: the stand-in compile command builds the candidate's
kernel, emulated, as a shared library at the path where a cubin would be, and ``RawModule(path=...)`` loads it.
So the bench script's own logic (compile, load, shared-memory opt-in, checks, timing loop) runs unchanged, and the
kernel under test is the candidate's own code. Launch rules follow CUDA's: a launch asking for more dynamic shared
memory than the function's limit fails (the limit is 48 KiB minus static until the bench opts in).

Timing is wall-clock time around the emulated launch; ``matmul`` (the cuBLAS stand-in) is NumPy's.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np
from numpy import abs, count_nonzero, float32, float64, inf, int32, isfinite, matmul, maximum, uint32, where  # noqa: A004, F401

DEFAULT_SHARED = 48 * 1024
OPTIN_SHARED = 227 * 1024


def asarray(x: Any) -> np.ndarray:
    return np.array(x, copy=True)  # host -> device is a copy


def asnumpy(x: Any) -> np.ndarray:
    return np.array(x, copy=True)  # device -> host is a copy


def empty(shape: Any, dtype: Any = float32) -> np.ndarray:
    return np.empty(shape, dtype)


class _RandomState:
    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def uniform(self, low: float, high: float, size: Any, dtype: Any = float64) -> np.ndarray:
        return self._rng.uniform(low, high, size).astype(dtype)


class random:  # noqa: N801 - CuPy's module name
    RandomState = _RandomState


class CUDADriverError(RuntimeError):
    pass


def _pointer(array: np.ndarray) -> ctypes.c_void_p:
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        raise CUDADriverError("CUDA_ERROR_INVALID_VALUE: kernel arguments must be contiguous float32 buffers")
    return ctypes.c_void_p(array.ctypes.data)


class Function:
    """One kernel of a loaded module: the emulated kernel's ``evolve_emu_launch``."""

    num_regs = 32
    max_threads_per_block = 1024

    def __init__(self, library: ctypes.CDLL):
        self._launch = library.evolve_emu_launch
        self._launch.restype = None
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_ulonglong, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        static = library.evolve_emu_static_smem_bytes
        static.restype = ctypes.c_ulonglong
        self.shared_size_bytes = int(static())
        self._max_dynamic = DEFAULT_SHARED - self.shared_size_bytes

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self._max_dynamic

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        if self.shared_size_bytes + int(value) > OPTIN_SHARED:
            raise CUDADriverError("CUDA_ERROR_INVALID_VALUE: shared memory above the device's opt-in limit")
        self._max_dynamic = int(value)

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                 shared_mem: int = 0) -> None:
        threads = int(np.prod(block))
        if threads > self.max_threads_per_block:
            raise CUDADriverError("CUDA_ERROR_INVALID_VALUE: too many threads per block")
        if shared_mem > self._max_dynamic:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {shared_mem} B of dynamic shared memory requested, the "
                                  f"function allows {self._max_dynamic} B (opt in above 48 KiB of static + dynamic)")
        a, b, c, m, n, k = args
        self._launch(int(grid[0]), int(grid[1]), threads, int(shared_mem), _pointer(a), _pointer(b), _pointer(c),
                     int(m), int(n), int(k))


class RawModule:
    def __init__(self, *, path: str, **_: Any):
        # RTLD_LOCAL: each module keeps its own globals, as each CUDA module does.
        self._library = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)

    def get_function(self, name: str) -> Function:
        if name != "matmul":
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: no kernel named {name!r}")
        return Function(self._library)


class _Event:
    def __init__(self) -> None:
        self.at = 0.0

    def record(self) -> None:
        self.at = time.perf_counter()

    def synchronize(self) -> None:
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802 - CuPy's name
        return 1

    @staticmethod
    def getDeviceProperties(index: int) -> dict[str, Any]:  # noqa: N802 - CuPy's name
        return {"name": b"CPU stand-in", "major": 9, "minor": 0, "multiProcessorCount": 132, "clockRate": 1980000,
                "l2CacheSize": 50 * 2**20, "sharedMemPerBlockOptin": OPTIN_SHARED}


class _Device:
    def __init__(self, index: int = 0):
        self.attributes: dict[str, int] = {}

    def synchronize(self) -> None:
        pass


class cuda:  # noqa: N801 - CuPy's module name
    runtime = _Runtime
    Event = _Event
    Device = _Device

    @staticmethod
    def get_elapsed_time(start: _Event, end: _Event) -> float:
        return max((end.at - start.at) * 1e3, 1e-6)


class _Pool:
    def free_all_blocks(self) -> None:
        pass


def get_default_memory_pool() -> _Pool:
    return _Pool()
