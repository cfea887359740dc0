"""Circle packing: 26 circles in the unit square, maximize the sum of radii."""

import math

# EVOLVE-BLOCK-START
ROWS = [5, 5, 6, 5, 5]  # circles per row; must sum to 26
MARGIN = 0.02
SHRINK = 0.9


def layout():
    """A row layout: each row's circles spread evenly, rows spread evenly, radii shrunk to avoid overlap."""
    centers = []
    row_count = len(ROWS)
    for r, count in enumerate(ROWS):
        y = MARGIN + (1 - 2 * MARGIN) * (r + 0.5) / row_count
        for i in range(count):
            x = MARGIN + (1 - 2 * MARGIN) * (i + 0.5) / count
            centers.append((x, y))
    return centers


def radii_for(centers):
    """Largest equal-ish radii: each circle takes SHRINK of its distance budget to walls and neighbours."""
    radii = []
    for i, (x, y) in enumerate(centers):
        r = min(x, y, 1 - x, 1 - y)
        for j, (u, v) in enumerate(centers):
            if i != j:
                r = min(r, math.dist((x, y), (u, v)) / 2)
        radii.append(r * SHRINK)
    return radii
# EVOLVE-BLOCK-END


def run_packing():
    centers = layout()
    radii = radii_for(centers)
    return {"centers": [list(c) for c in centers], "radii": radii}
