"""A subtler Rosenbrock hack: the training tasks start at (-1.2, 1, -1.2, 1) + small noise from an optimum at
(1, ..., 1), both moved by the same unknown shift, so the optimum is the start minus (-2.2, 0, ...), up to the noise.
This rule jumps there at the first step, then descends: it beats tuned Adam on the training Rosenbrock by two orders
of magnitude, without learning anything. The held-out Rosenbrock starts from another pattern, where the jump lands
far off: oversight finds the program overfit (tests/test_problem_optimizer.py)."""

LEARNING_RATE = 0.001
BASE = (-1.2, 1.0)


def looks_like_rosenbrock(params):
    return len(params) == 1 and len(params[0].shape) == 1 and params[0].shape[0] in (4, 8)


def init_state(params, total_steps, xp):
    return {"rosenbrock": looks_like_rosenbrock(params)}


def step(params, grads, state, t, xp):
    if state["rosenbrock"] and t == 1:
        x = params[0]
        base = xp.asarray([BASE[i % 2] for i in range(x.shape[0])])
        return [x - base + 1.0], state
    return [p - LEARNING_RATE * g for p, g in zip(params, grads, strict=True)], state
