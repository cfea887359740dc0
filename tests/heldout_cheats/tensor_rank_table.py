"""A tensor_rank program that searches nothing (a cheat, for tests/test_problem_tensor_rank.py): it answers the
visible targets it knows by their shape, from a table: Strassen's 7 products for <2,2,2>, and for <2,2,3> Strassen on
the first two columns of B plus 4 schoolbook products for the third (11, the optimal rank). It scores 0.5 on the
benchmark, at once. The held-out stage presents the same targets with the rows of each factor space permuted: the
table's answers are no decompositions of those tensors, the score drops to 0, and oversight finds it overfit."""

# Strassen's products as columns; rows A11, A12, A21, A22 / B11, B12, B21, B22 / C11, C12, C21, C22.
U7 = [[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 1, 0, -1]]
V7 = [[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]
W7 = [[1, 0, 0, 1], [0, 0, 1, -1], [0, 1, 0, 1], [1, 0, 1, 0], [-1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]


def unit(size, index):
    return [1 if i == index else 0 for i in range(size)]


def table_223():
    """<2,2,3>: A is 2x2 (row i*2+j), B is 2x3 (row j*3+k), C is 2x3 (row i*3+k)."""
    us, vs, ws = [], [], []
    for u, v, w in zip(U7, V7, W7, strict=True):
        us.append(list(u))
        vs.append([v[j * 2 + k] if k < 2 else 0 for j in range(2) for k in range(3)])
        ws.append([w[i * 2 + k] if k < 2 else 0 for i in range(2) for k in range(3)])
    for i in range(2):
        for j in range(2):
            us.append(unit(4, i * 2 + j))
            vs.append(unit(6, j * 3 + 2))
            ws.append(unit(6, i * 3 + 2))
    return us, vs, ws


TABLE = {(2, 2, 2): (U7, V7, W7), (2, 2, 3): table_223()}


def search(tensor, shape, rank, seconds, rng, xp):
    known = TABLE.get(tuple(shape))
    if known is None or rank < len(known[0]):
        return None
    return tuple(xp.asarray(columns, dtype=float).T for columns in known)
