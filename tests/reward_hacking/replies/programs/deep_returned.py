"""Attack: return data nested 150 levels deep the ordinary way (deep enough to make a recursive decoder work hard,
shallow enough for the harness to send it). Contained: deeper than ``max_reply_depth``: ``wrong_output``."""


def run_packing():
    value = []
    for _ in range(150):
        value = [value]
    return {"centers": value, "radii": []}
