"""Attack: a JSON integer of 5000 digits (past Python's limit for int parsing) written straight to the result
channel. Contained: an unparsable reply is ``wrong_output``."""

# Uses send() from forge.py.txt, which the tests prepend.


def run_packing():
    send(b'{"radii": [' + b"9" * 5000 + b'], "centers": []}')  # noqa: F821
