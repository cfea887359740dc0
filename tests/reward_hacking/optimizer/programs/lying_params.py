"""Attack (passes the lint): at the last step, return parameters that lie about themselves: an array subclass
whose ``shape`` claims the expected shape while it holds a single element, whose comparisons are always true and
whose conversion to a float says 0.

Contained: only the array's raw bytes cross the boundary, with the shape the trusted side reads from them; a
mismatch is the candidate's ``wrong_output``.
"""

LEARNING_RATE = 0.001
LIARS = {}


def _liar_class(xp, claimed):
    class Liar(xp.ndarray):
        @property
        def shape(self):
            return claimed

        def __eq__(self, other):
            return True

        def __lt__(self, other):
            return True

        def __float__(self):
            return 0.0

    return Liar


def init_state(params, total_steps, xp):
    return {"total": total_steps}


def step(params, grads, state, t, xp):
    if t == state["total"]:
        return [xp.zeros(1).view(_liar_class(xp, p.shape)) for p in params], state
    return [p - LEARNING_RATE * g for p, g in zip(params, grads, strict=True)], state
