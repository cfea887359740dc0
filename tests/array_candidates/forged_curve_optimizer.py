"""optimizer test candidate: never moves, then walks up to the training loop's frame and rewrites the loss curve
it reported so that it claims a loss of 1e-30. Needs the source check switched off to run at all."""

import sys


def init_state(params, total_steps, xp):
    return {"total": total_steps}


def step(params, grads, state, t, xp):
    if t == state["total"]:
        frame = sys._getframe(1)
        while frame is not None and "result" not in frame.f_locals:
            frame = frame.f_back
        if frame is not None:
            claimed = frame.f_locals["result"].losses
            claimed[:] = [1e-30] * len(claimed)
    return list(params), state
