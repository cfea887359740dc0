"""A search for exact low-rank decompositions of matrix multiplication tensors: gradient descent with rounding.

Interface (keep the name and arguments):
  search(tensor, shape, rank, seconds, rng, xp) -> (U, V, W) or None
tensor: the <n, m, p> matmul tensor as an (n*m, m*p, n*p) float array of `xp` (NumPy or CuPy: never import either,
use `xp`); shape: (n, m, p); rank: the number of columns wanted; seconds: the CPU time (time.process_time) left for
this target, after which a running search is interrupted (counted as giving up); rng: a seeded `xp.random`
Generator (random, standard_normal, integers). Return three matrices U (n*m x R), V (m*p x R), W (n*p x R) with
R <= rank, entries in {-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2}, whose sum of outer products equals the tensor
exactly, or None when nothing exact was found. The evaluator checks exactness itself in integer arithmetic: any
inexact decomposition scores 0 for its target.
"""

import time


def khatri_rao(a, b):
    """Column-wise Kronecker product: row (i, j) of the result is a[i] * b[j]."""
    return (a[:, None, :] * b[None, :, :]).reshape(-1, a.shape[1])


def residual_and_grads(tensor, factors):
    """Residual sum_r u_r (x) v_r (x) w_r - tensor and the gradients of 0.5 * ||residual||^2 for (U, V, W)."""
    a, b, c = tensor.shape
    u, v, w = factors
    residual = (u @ khatri_rao(v, w).T).reshape(a, b, c) - tensor
    grads = (
        residual.reshape(a, b * c) @ khatri_rao(v, w),
        residual.transpose(1, 0, 2).reshape(b, a * c) @ khatri_rao(u, w),
        residual.transpose(2, 0, 1).reshape(c, a * b) @ khatri_rao(u, v),
    )
    return residual, grads


def is_exact(tensor, factors, xp):
    u, v, w = factors
    return bool(xp.all((u @ khatri_rao(v, w).T).reshape(tensor.shape) == tensor))


# EVOLVE-BLOCK-START
LEARNING_RATE = 0.05
INIT_SCALE = 0.5
FIT_STEPS = 400
WEIGHT_DECAY = 0.001
FIT_TOLERANCE = 0.01
ROUND_FRACTION = 0.2
POLISH_STEPS = 50


def descend(tensor, factors, masks, steps, decay):
    """Plain gradient descent on the squared residual (plus weight decay); masked entries stay fixed."""
    loss = None
    for _ in range(steps):
        residual, grads = residual_and_grads(tensor, factors)
        for factor, grad, mask in zip(factors, grads, masks, strict=True):
            factor -= LEARNING_RATE * (grad + decay * factor) * mask
        loss = 0.5 * float((residual * residual).sum())
    return loss


def attempt(tensor, rank, rng, xp):
    """One restart: fit, then round greedily (fix the entries nearest an integer, re-fit the rest, repeat)."""
    factors = [rng.standard_normal((size, rank)) * INIT_SCALE for size in tensor.shape]
    masks = [xp.ones_like(f) for f in factors]
    loss = descend(tensor, factors, masks, FIT_STEPS, WEIGHT_DECAY)
    if not loss < FIT_TOLERANCE:
        return None
    while True:
        gaps = [xp.abs(f - xp.round(f)) for f in factors]
        free = xp.concatenate([g[m > 0] for g, m in zip(gaps, masks, strict=True)])
        if free.size == 0:
            break
        count = max(1, int(ROUND_FRACTION * free.size))
        threshold = xp.sort(free)[count - 1]
        for f, g, m in zip(factors, gaps, masks, strict=True):
            chosen = (m > 0) & (g <= threshold)
            f[chosen] = xp.round(f[chosen])
            m[chosen] = 0.0
        loss = descend(tensor, factors, masks, POLISH_STEPS, 0.0)
        if not loss < 10 * FIT_TOLERANCE:
            return None
    rounded = [xp.round(f) for f in factors]
    if is_exact(tensor, rounded, xp) and all(bool(xp.all(xp.abs(f) <= 2)) for f in rounded):
        return rounded
    return None


def search(tensor, shape, rank, seconds, rng, xp):
    """Restart until an attempt is exact or the CPU budget is (nearly) spent."""
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        found = attempt(tensor, rank, rng, xp)
        if found is not None:
            return found
    return None
# EVOLVE-BLOCK-END
