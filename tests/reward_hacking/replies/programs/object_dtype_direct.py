"""Attack: a reply with an array of Python objects (what unpickling would need). Contained: only numeric dtypes are
accepted: ``wrong_output``."""

# Uses send() from forge.py.txt, which the tests prepend.


def run_packing():
    send(b'{"radii": {"__array__": 0}, "centers": []}', b', "arrays": [["|O", [1], 0]], "nbytes": 8', b"\0" * 8)  # noqa: F821
