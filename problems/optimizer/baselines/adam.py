"""Adam with one learning rate for every task (a baseline for the README; same interface as initial_program.py)."""

# EVOLVE-BLOCK-START
LEARNING_RATE = 0.1
BETA1 = 0.9
BETA2 = 0.999
EPSILON = 1e-8


def init_state(params, total_steps, xp):
    return [xp.zeros_like(p) for p in params], [xp.zeros_like(p) for p in params]


def step(params, grads, state, t, xp):
    first, second = state
    first = [BETA1 * m + (1 - BETA1) * g for m, g in zip(first, grads, strict=True)]
    second = [BETA2 * v + (1 - BETA2) * g * g for v, g in zip(second, grads, strict=True)]
    correction1 = 1 - BETA1 ** t
    correction2 = 1 - BETA2 ** t
    new_params = [p - LEARNING_RATE * (m / correction1) / (xp.sqrt(v / correction2) + EPSILON)
                  for p, m, v in zip(params, first, second, strict=True)]
    return new_params, (first, second)
# EVOLVE-BLOCK-END
