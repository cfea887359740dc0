"""Heavy-ball momentum (a baseline for the README; same interface as initial_program.py)."""

# EVOLVE-BLOCK-START
LEARNING_RATE = 0.001
MOMENTUM = 0.9


def init_state(params, total_steps, xp):
    return [xp.zeros_like(p) for p in params]


def step(params, grads, state, t, xp):
    velocity = [MOMENTUM * v + g for v, g in zip(state, grads, strict=True)]
    new_params = [p - LEARNING_RATE * v for p, v in zip(params, velocity, strict=True)]
    return new_params, velocity
# EVOLVE-BLOCK-END
