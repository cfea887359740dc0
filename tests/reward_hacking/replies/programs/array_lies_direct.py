"""Attack: a reply whose array descriptor claims a million float64s while the payload holds one.
Contained: descriptors are checked against the payload before any array is built: ``wrong_output``."""

# Uses send() from forge.py.txt, which the tests prepend.


def run_packing():
    send(b'{"radii": {"__array__": 0}, "centers": []}', b', "arrays": [["<f8", [1000000], 0]], "nbytes": 8',  # noqa: F821
         b"\0" * 8)
