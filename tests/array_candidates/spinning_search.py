"""tensor_rank test candidate: never looks at its budget and spins forever; the CPU-time interruption ends it."""


def search(tensor, shape, rank, seconds, rng, xp):
    count = 0
    while True:
        try:  # noqa: SIM105 - the point: a broad handler around the work
            count += 1
        except Exception:  # an ordinary handler must not swallow the budget interruption
            pass
