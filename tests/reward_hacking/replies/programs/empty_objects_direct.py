"""Attack: a 63 MB reply of empty objects written straight to the result channel with the right id (it drove the
trusted process to 3 GB). Contained: the reply is over the size cap (``max_reply_mb``, 8 by default) and is refused unread; a smaller one
would be refused by the container count before parsing (``empty_objects_returned.py``): ``wrong_output``."""

# Uses send() from forge.py.txt, which the tests prepend.


def run_packing():
    send(b"[" + b"{}," * 21_000_000 + b"{}]")  # noqa: F821
