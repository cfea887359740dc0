"""optimizer test candidate: trains with SGD, then returns all-zero parameters unrelated to its training."""


def init_state(params, total_steps, xp):
    return {"total": total_steps}


def step(params, grads, state, t, xp):
    if t == state["total"]:
        return [xp.zeros_like(p) for p in params], state
    return [p - 0.001 * g for p, g in zip(params, grads, strict=True)], state
