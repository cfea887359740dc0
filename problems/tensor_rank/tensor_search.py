"""The tensor_rank problem's matmul tensors and in-sandbox driver, for any array module ``xp``.

Convention (also the README's): for C = A B with A n x m, B m x p, the tensor T of shape (n*m, m*p, n*p) has
T[i*m + j, j*p + k, i*p + k] = 1. A rank-R decomposition is three factor matrices U (n*m x R), V (m*p x R) and
W (n*p x R) with T = sum_r U[:, r] (x) V[:, r] (x) W[:, r]; it is an algorithm computing C with R multiplications:
C[i, k] = sum_r W[i*p + k, r] * (sum_ij U[i*m + j, r] A[i, j]) * (sum_jk V[j*p + k, r] B[j, k]).

``search_target`` runs in the candidate's process (through ``evaluators/array_harness.py``): it asks the candidate's
``search`` for rank n*m*p - 1, then for one less than each rank it gets back, until the candidate gives up (returns
None) or the target's budget is spent. Everything the candidate returned goes back to the trusted evaluator, which
verifies each decomposition exactly; this file checks nothing that matters.

Budgets are CPU seconds of this process (``time.process_time``), enforced with a profiling timer (``SIGPROF``) that
interrupts a search still running when its budget is spent: scores then hardly depend on how loaded the machine is
(two evaluations sharing a core each take twice the wall time, with the same result). The trusted side keeps a
wall-clock timeout as the backstop for searches that sleep or swallow the interruption.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import numpy as np


def matmul_tensor(n: int, m: int, p: int) -> np.ndarray:
    """The <n, m, p> matrix multiplication tensor as an int64 array (exact)."""
    tensor = np.zeros((n * m, m * p, n * p), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            for k in range(p):
                tensor[i * m + j, j * p + k, i * p + k] = 1
    return tensor


def target_seed(evaluation_seed: int, dims: tuple[int, int, int]) -> int:
    """The seed of the candidate's generator for one target, derived from the trusted per-evaluation seed."""
    return int(np.random.SeedSequence([evaluation_seed % 2**63, *dims]).generate_state(1)[0])


def effective_rank(factors: list[np.ndarray]) -> int:
    """Columns whose three factor vectors are all nonzero (a zero column contributes no multiplication)."""
    alive = np.ones(factors[0].shape[1], dtype=bool)
    for factor in factors:
        alive &= np.any(factor != 0, axis=0)
    return int(alive.sum())


def _host_factors(result: Any, xp: Any, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Three host float64 matrices, or a TypeError saying what ``search`` must return."""
    if not isinstance(result, list | tuple) or len(result) != 3:
        raise TypeError("search() must return None or three factor matrices (U, V, W)")
    factors = []
    for name, rows, value in zip("UVW", shape, result, strict=True):
        array = value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else value
        array = np.asarray(array, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] != rows:
            raise TypeError(f"search() returned {name} with shape {array.shape}, expected ({rows}, rank)")
        factors.append(array)
    if len({f.shape[1] for f in factors}) != 1:
        raise TypeError(f"search() returned factors with different ranks {[f.shape[1] for f in factors]}")
    return factors


def warm(candidate: Any, xp: Any) -> str:
    """Nothing but the imports and the driver's compilation, so that they are not charged to the first target."""
    return xp.__name__


class BudgetSpent(BaseException):
    """Raised inside a search whose CPU budget ran out (a BaseException, so ``except Exception`` does not eat it)."""


def _interrupt(signum: int, frame: Any) -> None:
    raise BudgetSpent


def _search_within(candidate: Any, budget: float, *args: Any) -> Any:
    """``candidate.search(*args)``, interrupted (-> None) once this process has used ``budget`` more CPU seconds."""
    previous = signal.signal(signal.SIGPROF, _interrupt)
    signal.setitimer(signal.ITIMER_PROF, budget)
    try:
        return candidate.search(*args)
    except BudgetSpent:
        return None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def search_target(candidate: Any, xp: Any, dims: list[int], seconds: float, seed: int) -> dict[str, Any]:
    """Descend in rank from n*m*p - 1 with the candidate's ``search``; return every decomposition it produced."""
    n, m, p = (int(d) for d in dims)
    host = matmul_tensor(n, m, p)
    tensor = xp.asarray(host.astype(np.float64))
    rng = xp.random.default_rng(seed)
    start = time.process_time()
    rank = n * m * p - 1
    found: list[dict[str, Any]] = []
    while rank >= 1:
        left = seconds - (time.process_time() - start)
        if left <= 0:
            break
        result = _search_within(candidate, left, tensor, (n, m, p), rank, left, rng, xp)
        if result is None:
            break
        factors = _host_factors(result, xp, host.shape)
        found.append({"asked": rank, "factors": factors})
        rank = min(rank, effective_rank(factors)) - 1
    return {"found": found, "cpu_seconds": time.process_time() - start}
