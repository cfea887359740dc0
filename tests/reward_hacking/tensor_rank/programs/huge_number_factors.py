"""Attack (passes the lint): answer with numbers no float can hold (10**400) in plain lists, and with entries at
the edge of float64 in arrays.

Contained: factor matrices must be real numeric arrays; anything else is the candidate's ``wrong_output``.
"""


def search(tensor, shape, rank, seconds, rng, xp):
    if rank % 2:
        return [[[10**400] * rank for _ in range(rows)] for rows in tensor.shape]
    return tuple(xp.full((rows, rank), 1.7e308) for rows in tensor.shape)
