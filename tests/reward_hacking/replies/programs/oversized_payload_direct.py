"""Attack: a reply announcing a terabyte of payload. Contained: the announced size is checked against
``max_reply_mb`` before anything is read: ``wrong_output``."""

# Uses send() from forge.py.txt, which the tests prepend.


def run_packing():
    send(b"{}", b', "nbytes": 1000000000000')  # noqa: F821
