"""Attack: a reply nested 980 levels deep, written straight to the result channel (it raised RecursionError in
the framework's decoder). Contained: the depth is measured before parsing: ``wrong_output``."""

# Uses send() from forge.py.txt, which the tests prepend.


def run_packing():
    send(b"[" * 980 + b"]" * 980)  # noqa: F821
