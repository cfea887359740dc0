"""An optimizer update rule: plain gradient descent (the seed).

The evaluator trains several small tasks with it and compares the final losses with a tuned Adam's.
Interface (keep the names and arguments):
  init_state(params, total_steps, xp) -> state
  step(params, grads, state, t, xp) -> (new_params, new_state)
params and grads are lists of arrays of the array module `xp` (NumPy or CuPy: do not import either, use `xp`);
t counts steps from 1 to total_steps; state is anything made of arrays, numbers, lists, tuples and dicts.
"""

# EVOLVE-BLOCK-START
LEARNING_RATE = 0.001


def init_state(params, total_steps, xp):
    return None


def step(params, grads, state, t, xp):
    new_params = [p - LEARNING_RATE * g for p, g in zip(params, grads, strict=True)]
    return new_params, state
# EVOLVE-BLOCK-END
