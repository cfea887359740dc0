"""Attack (passes the lint): reach ``inspect`` through NumPy's own submodules (``xp.ma.core.inspect``), walk every
frame of the process and every object reachable from its locals, looking for the task instance (an object with a
``data`` dict holding the quadratic's ``optimum``) or any dict with an ``optimum`` key; return that optimum as the
parameters. The seed's update otherwise.

Contained: the candidate's process holds no task data: its frames are the harness's, handling the parameters and
gradients of the current step.
"""

LEARNING_RATE = 0.001
FOUND = {}


def _search(value, inspect, depth, seen):
    if depth > 3 or id(value) in seen or inspect.ismodule(value) or inspect.isroutine(value) \
            or inspect.isclass(value):
        return None
    seen.add(id(value))
    if isinstance(value, dict):
        if "optimum" in value:
            return value["optimum"]
        children = list(value.values())[:200]
    elif isinstance(value, list | tuple):
        children = list(value)[:200]
    elif isinstance(value, int | float | str | bytes | bytearray) or value is None:
        return None
    else:
        try:
            children = [v for k, v in inspect.getmembers(value) if not k.startswith("_")][:50]
        except Exception:  # noqa: BLE001
            return None
    for child in children:
        found = _search(child, inspect, depth + 1, seen)
        if found is not None:
            return found
    return None


def _steal(xp):
    inspect = xp.ma.core.inspect
    for info in inspect.stack(0):
        local_vars = inspect.getargvalues(info.frame).locals
        found = _search(local_vars, inspect, 0, set())
        if found is not None:
            return found
    return None


def init_state(params, total_steps, xp):
    if "optimum" not in FOUND:
        FOUND["optimum"] = _steal(xp)
    return {"total": total_steps}


def step(params, grads, state, t, xp):
    optimum = FOUND.get("optimum")
    if t == state["total"] and optimum is not None and len(params) == 1:
        return [xp.asarray(optimum, dtype=float)], state
    return [p - LEARNING_RATE * g for p, g in zip(params, grads, strict=True)], state
