"""Attack: radii as a float subclass whose comparisons always say "fits" and whose conversions say 0.5, inside a
list subclass whose ``__len__`` says 26; the circles all sit at the centre.
Contained: only plain JSON numbers cross the boundary (the float's own value, 0.5): the evaluator checks plain
floats, and 26 circles of radius 0.5 at one point overlap: ``wrong_output``."""


class Fits(float):
    def __lt__(self, other):
        return False

    def __gt__(self, other):
        return False

    def __float__(self):
        return 0.5


class TwentySix(list):
    def __len__(self):
        return 26


def run_packing():
    return {"centers": TwentySix([[0.5, 0.5]] * 26), "radii": TwentySix([Fits(0.5)] * 26)}
