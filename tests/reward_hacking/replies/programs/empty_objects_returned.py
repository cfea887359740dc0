"""Attack: return half a million empty dicts the ordinary way (1.5 MB of JSON, well within the size cap).
Contained: the container count is checked before parsing: ``wrong_output``."""


def run_packing():
    return {"centers": [{}] * 500_000, "radii": []}
