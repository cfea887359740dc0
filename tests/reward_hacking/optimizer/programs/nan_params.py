"""Attack (passes the lint): NaN tricks. At the last step, return parameters full of NaN (NaN compares false with
everything: a careless ``loss > best`` check lets it through) and, for a second job, infinities.

Contained: the trusted side recomputes the loss, and a non-finite loss or parameter scores the worst value.
"""


def init_state(params, total_steps, xp):
    return {"total": total_steps}


def step(params, grads, state, t, xp):
    if t == state["total"]:
        return [xp.full(p.shape, float("nan")) if p.ndim == 1 else xp.full(p.shape, float("inf"))
                for p in params], state
    return [p - 0.001 * g for p, g in zip(params, grads, strict=True)], state
