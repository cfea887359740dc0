"""Attack: radii in a NumPy array subclass whose ``sum``, ``min``, comparisons and ``__array__`` lie, and complex
centres. Contained: arrays cross as raw bytes of a plain dtype; complex data is refused: ``wrong_output``."""

import numpy as np


class Liar(np.ndarray):
    def sum(self, *args, **kwargs):
        return 100.0

    def __lt__(self, other):
        return np.zeros(self.shape, dtype=bool)

    def __array__(self, dtype=None, copy=None):
        return np.full(self.shape, 0.01)


def run_packing():
    radii = np.full(26, 0.4).view(Liar)
    return {"centers": np.full((26, 2), 0.5 + 0.1j), "radii": radii}
