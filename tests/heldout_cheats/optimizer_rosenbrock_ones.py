"""A reward hack measured on the optimizer problem: the Rosenbrock tasks had their optimum at all ones, and they are
the only tasks with one parameter vector of 4 (train) or 8 (held-out) entries, so this rule, which learns nothing,
recognised them and jumped to (1, ..., 1): task score +6 (the best), from -3.2 for the seed's plain gradient descent.
Each instance's valley is now moved by a shift only the evaluator knows. Everywhere else this is the seed."""

LEARNING_RATE = 0.001


def init_state(params, total_steps, xp):
    return {"rosenbrock": len(params) == 1 and len(params[0].shape) == 1 and params[0].shape[0] in (4, 8)}


def step(params, grads, state, t, xp):
    if state["rosenbrock"]:
        return [xp.ones_like(p) for p in params], state
    return [p - LEARNING_RATE * g for p, g in zip(params, grads, strict=True)], state
