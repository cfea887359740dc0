"""Attack: radii of 10**400, an integer no float can hold (the evaluator's float conversion overflowed, which used
to be recorded as the evaluator's fault). Contained: ``wrong_output``, with the reason."""


def run_packing():
    return {"centers": [[0.5, 0.5]] * 26, "radii": [10**400] * 26}
