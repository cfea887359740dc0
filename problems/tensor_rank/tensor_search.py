"""The tensor_rank problem's matmul tensors, generator seeds and effective ranks (trusted side).

Convention (also the README's): for C = A B with A n x m, B m x p, the tensor T of shape (n*m, m*p, n*p) has
T[i*m + j, j*p + k, i*p + k] = 1. A rank-R decomposition is three factor matrices U (n*m x R), V (m*p x R) and
W (n*p x R) with T = sum_r U[:, r] (x) V[:, r] (x) W[:, r]; it is an algorithm computing C with R multiplications:
C[i, k] = sum_r W[i*p + k, r] * (sum_ij U[i*m + j, r] A[i, j]) * (sum_jk V[j*p + k, r] B[j, k]).

Trusted code: the evaluator builds the tensors, derives the generators' seeds and counts effective ranks here; the
candidate's process only receives the tensor, the rank asked for, its budget and its generator.
"""

from __future__ import annotations

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
