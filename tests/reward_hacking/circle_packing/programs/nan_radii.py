"""Attack: NaN radii and centres (NaN compares false with everything: "overlap > tolerance" is never true).
Contained: non-finite numbers are refused before any geometry: ``wrong_output``."""


def run_packing():
    nan = float("nan")
    return {"centers": [[nan, nan]] * 26, "radii": [nan] * 26}
