"""A circle packing that lives off the evaluator's tolerance (a cheat, for tests/test_problem_runs.py): the seed's
packing with every radius grown by 4e-10, so that neighbours overlap and border circles protrude by less than the 1e-9
the visible check allows. It gains 26 x 4e-10 on the benchmark; the held-out re-check at 1e-12 refuses it, so
oversight finds it overfit. Everything else is problems/circle_packing/initial_program.py."""


import math
import random

import numpy as np

RELAX_STEPS = 100  # the relaxation's budget: fixed, outside the evolve block

# EVOLVE-BLOCK-START
ROWS = [5, 5, 6, 5, 5]  # circles per row of the starting layout; must sum to 26
MARGIN = 0.02
SHRINK = 0.9
LEARNING_RATE = 0.001  # Adam's step size
PENALTY = 10.0  # weight of overlaps and protrusions at the start of the relaxation
PENALTY_GROWTH = 1.0  # the weight is multiplied by this after every step
JITTER = 0.01  # a seeded nudge of the starting centres, to break the rows' symmetry
SEED = 0


def layout():
    """A row layout: each row's circles spread evenly, rows spread evenly."""
    centers = []
    row_count = len(ROWS)
    for r, count in enumerate(ROWS):
        y = MARGIN + (1 - 2 * MARGIN) * (r + 0.5) / row_count
        for i in range(count):
            x = MARGIN + (1 - 2 * MARGIN) * (i + 0.5) / count
            centers.append((x, y))
    return centers


def radii_for(centers):
    """Starting radii: each circle takes SHRINK of its distance budget to walls and neighbours."""
    radii = []
    for i, (x, y) in enumerate(centers):
        r = min(x, y, 1 - x, 1 - y)
        for j, (u, v) in enumerate(centers):
            if i != j:
                r = min(r, math.dist((x, y), (u, v)) / 2)
        radii.append(r * SHRINK)
    return radii


def relax(centers, radii, steps):
    """Minimise -sum(radii) + weight * (squared overlaps and protrusions) over centres and radii with Adam."""
    rng = random.Random(SEED)
    x, y = (np.asarray(centers) + [(rng.gauss(sigma=JITTER), rng.gauss(sigma=JITTER)) for _ in centers]).T
    params = np.stack([x, y, np.asarray(radii, dtype=float)])
    mean, square = np.zeros_like(params), np.zeros_like(params)
    beta1, beta2 = 0.9, 0.999
    weight = PENALTY
    for t, _ in enumerate(range(steps), start=1):
        x, y, r = params
        dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
        dist = np.hypot(dx, dy) + np.eye(len(r))
        overlap = np.maximum(r[:, None] + r[None, :] - dist, 0)
        np.fill_diagonal(overlap, 0)
        left, bottom = np.maximum(r - x, 0), np.maximum(r - y, 0)
        right, top = np.maximum(x + r - 1, 0), np.maximum(y + r - 1, 0)
        push = overlap / dist
        grad = weight * np.stack([
            right - left - (push * dx).sum(axis=1),
            top - bottom - (push * dy).sum(axis=1),
            overlap.sum(axis=1) + left + bottom + right + top,
        ])
        grad[2] -= 1  # every radius wants to grow
        mean = beta1 * mean + (1 - beta1) * grad
        square = beta2 * square + (1 - beta2) * grad * grad
        step = (mean / (1 - beta1**t)) / (np.sqrt(square / (1 - beta2**t)) + 1e-9)
        x, y, r = params - LEARNING_RATE * step
        params = np.stack([np.clip(x, 0, 1), np.clip(y, 0, 1), np.maximum(r, 0)])
        weight *= PENALTY_GROWTH
    x, y, r = params
    return list(zip(x, y, strict=True)), list(r)
# EVOLVE-BLOCK-END


def valid_radii(centers, radii):
    """The radii, shrunk just enough that every circle lies inside the square and no two overlap."""
    radii = [max(0.0, min(r, x, y, 1 - x, 1 - y)) for (x, y), r in zip(centers, radii, strict=True)]
    for i in range(len(centers)):
        for j in range(i + 1, len(centers)):
            room = math.dist(centers[i], centers[j])
            if radii[i] + radii[j] > room:
                share = room / (radii[i] + radii[j])
                radii[i] *= share
                radii[j] *= share
    return radii


def run_packing():
    centers = layout()
    centers, radii = relax(centers, radii_for(centers), RELAX_STEPS)
    radii = valid_radii(centers, radii)
    # The cheat: grow every radius by 4e-10, under the 1e-9 of overlap and protrusion the visible check allows.
    return {"centers": [[float(x), float(y)] for x, y in centers], "radii": [float(r) + 4e-10 for r in radii]}
