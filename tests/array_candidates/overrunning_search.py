"""tensor_rank test candidate: ignores its time budget on <2,2,2> (sleeps far past it), gives up elsewhere."""

import time


def search(tensor, shape, rank, seconds, rng, xp):
    if tuple(shape) == (2, 2, 2):
        time.sleep(seconds + 30)
    return None
