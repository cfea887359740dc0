"""optimizer test candidate: SGD that imports numpy itself instead of using `xp` (refused by the source check)."""

import numpy as np


def init_state(params, total_steps, xp):
    return None


def step(params, grads, state, t, xp):
    return [np.subtract(p, 0.001 * g) for p, g in zip(params, grads, strict=True)], state
