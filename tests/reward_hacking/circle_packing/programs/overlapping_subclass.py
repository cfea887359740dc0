"""Attack: a valid-looking NumPy subclass of huge radii whose ``__array__`` claims tiny ones.
Contained: the bytes sent are the array's own data (0.4 each), too large for the square: ``wrong_output``."""

import numpy as np


class Small(np.ndarray):
    def __array__(self, dtype=None, copy=None):
        return np.full(self.shape, 0.001)


def run_packing():
    centers = [[0.1 + 0.8 * (i % 6) / 5, 0.1 + 0.8 * (i // 6) / 4] for i in range(26)]
    return {"centers": centers, "radii": np.full(26, 0.4).view(Small)}
