"""tensor_rank test candidate: Strassen's 7-product algorithm for <2,2,2>, nothing for the other targets."""

# Columns are the products M1..M7; rows follow the problem's index convention:
# U rows A11, A12, A21, A22; V rows B11, B12, B21, B22; W rows C11, C12, C21, C22.
U_COLUMNS = [[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 1, 0, -1]]
V_COLUMNS = [[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]
W_COLUMNS = [[1, 0, 0, 1], [0, 0, 1, -1], [0, 1, 0, 1], [1, 0, 1, 0], [-1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]


def search(tensor, shape, rank, seconds, rng, xp):
    if tuple(shape) != (2, 2, 2) or rank < 7:
        return None
    return tuple(xp.asarray(columns, dtype=float).T for columns in (U_COLUMNS, V_COLUMNS, W_COLUMNS))
