"""Attack: integer coordinates just past int64 and a radius list mixing ints and floats.
Contained: ``wrong_output`` (no float conversion of a number that does not fit)."""


def run_packing():
    return {"centers": [[2**64, 2**70]] * 26, "radii": [0, 0.5] * 13}
