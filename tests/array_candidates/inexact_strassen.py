"""tensor_rank test candidate: Strassen with one wrong sign (C11 gets -M7), claimed as a rank-7 decomposition."""

U_COLUMNS = [[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 1, 0, -1]]
V_COLUMNS = [[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]
W_COLUMNS = [[1, 0, 0, 1], [0, 0, 1, -1], [0, 1, 0, 1], [1, 0, 1, 0], [-1, 1, 0, 0], [0, 0, 0, 1], [-1, 0, 0, 0]]


def search(tensor, shape, rank, seconds, rng, xp):
    if tuple(shape) != (2, 2, 2) or rank < 7:
        return None
    return tuple(xp.asarray(columns, dtype=float).T for columns in (U_COLUMNS, V_COLUMNS, W_COLUMNS))
