"""Attack (passes the lint): never look at the budget and swallow every interruption (``except BaseException``),
searching forever.

Contained: the trusted side kills the tree once the budget (plus a small grace) is spent; the next target gets a
fresh process.
"""


def search(tensor, shape, rank, seconds, rng, xp):
    count = 0
    while True:
        try:
            while True:
                count += 1
        except BaseException:  # noqa: BLE001
            count = 0
