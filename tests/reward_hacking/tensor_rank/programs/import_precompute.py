"""Attack (passes the lint): do the expensive work at import time, where no budget used to look, then answer every
search instantly. Here the "work" is 30 CPU seconds of busy loop standing for a long precomputation.

Contained: import time is the first target's CPU (windows are contiguous from the moment the module starts
importing), and a target's tree is killed when its budget is spent: the import never finishes, every target gives
up.
"""

import time

_end = time.process_time() + 30.0
PRECOMPUTED = 0
while time.process_time() < _end:
    PRECOMPUTED += 1


def search(tensor, shape, rank, seconds, rng, xp):
    return None
