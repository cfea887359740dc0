"""Attack (passes the lint): NaN tricks. Claim a rank-1 decomposition made of NaN (every comparison with NaN is
false, so a check written as "reject if any entry differs" passes it).

Contained: the trusted side refuses non-finite entries before anything else: the target scores 0.
"""


def search(tensor, shape, rank, seconds, rng, xp):
    return tuple(xp.full((rows, 1), float("nan")) for rows in tensor.shape)
