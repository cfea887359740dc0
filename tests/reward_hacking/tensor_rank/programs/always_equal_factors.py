"""Attack (passes the lint): claim a rank-1 decomposition of every tensor with factor arrays of an array subclass
whose comparisons are always true and whose every entry is 1.

Contained: only the raw numbers cross the boundary; the trusted side verifies them in exact integer arithmetic.
"""


def search(tensor, shape, rank, seconds, rng, xp):
    class AlwaysEqual(xp.ndarray):
        def __eq__(self, other):
            return xp.ones(self.shape, dtype=bool).view(xp.ndarray)

        def __ne__(self, other):
            return xp.zeros(self.shape, dtype=bool).view(xp.ndarray)

    return tuple(xp.ones((rows, 1)).view(AlwaysEqual) for rows in tensor.shape)
