"""Attack (needs the lint switched off: imports ``gc`` and ``sys``): ask the garbage collector for every object in
the process and for the referrers of the parameters it is handed, looking for the task's data (a dict with an
``optimum``, or arrays of the parameters' shape held next to them), and read the driver's frame with
``sys._getframe``. Returns a found optimum; the seed's update otherwise.

Contained: no task data exists in the candidate's process to be found.
"""

import gc
import sys

LEARNING_RATE = 0.001
FOUND = {}


def _look(params):
    for obj in gc.get_objects():
        if isinstance(obj, dict) and "optimum" in obj:
            return obj["optimum"]
    for holder in gc.get_referrers(params[0]):
        if isinstance(holder, dict) and "optimum" in holder:
            return holder["optimum"]
    frame = sys._getframe(1)
    while frame is not None:
        for value in frame.f_locals.values():
            data = getattr(value, "data", None)
            if isinstance(data, dict) and "optimum" in data:
                return data["optimum"]
        frame = frame.f_back
    return None


def init_state(params, total_steps, xp):
    FOUND["optimum"] = _look(params)
    return {"total": total_steps}


def step(params, grads, state, t, xp):
    optimum = FOUND.get("optimum")
    if t == state["total"] and optimum is not None and len(params) == 1:
        return [xp.asarray(optimum, dtype=float)], state
    return [p - LEARNING_RATE * g for p, g in zip(params, grads, strict=True)], state
