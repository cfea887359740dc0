"""Trusted evaluator for circle packing: the candidate only proposes; every check is made here.

What arrives is data only (JSON values, numeric arrays), but any of it may be hostile: numbers too large for a
float (10**400), complex or boolean arrays, ragged or nested lists, NaN. Each is refused here with a reason
(``WrongOutput``) before any arithmetic.

``recheck`` is the held-out stage (``role = "heldout"``, run by oversight for a program about to count as best): a
second, independent run of ``run_packing()`` in a fresh process, checked at a tolerance a thousand times stricter.
A packing valid only thanks to the tolerance, or one that changes from run to run, does not pass it.
"""

from __future__ import annotations

import json

import numpy as np

from evolve import Candidate, StageReport, WrongOutput

N_CIRCLES = 26
TOLERANCE = 1e-9  # allowed overlap / protrusion, absolute
STRICT_TOLERANCE = 1e-12  # the held-out re-check's


def check_packing(data: object, tolerance: float = TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Validate the shape, types and geometry of a packing; raise WrongOutput with the first violation."""
    if not isinstance(data, dict) or "centers" not in data or "radii" not in data:
        raise WrongOutput("run_packing() must return a dict with 'centers' and 'radii'")
    arrays = []
    for name in ("centers", "radii"):
        try:
            array = np.asarray(data[name])
        except (TypeError, ValueError, OverflowError) as exc:  # ragged lists, hostile objects
            raise WrongOutput(f"{name} is not an array of numbers: {str(exc)[:200]}") from None
        if array.dtype.kind not in "iuf":  # strings, booleans, None, complex, ints too large for int64 (10**400)
            raise WrongOutput(f"{name} must hold real numbers (got {array.dtype} data)")
        arrays.append(array.astype(np.float64))
    centers, radii = arrays
    if centers.shape != (N_CIRCLES, 2) or radii.shape != (N_CIRCLES,):
        raise WrongOutput(f"expected centers {(N_CIRCLES, 2)} and radii {(N_CIRCLES,)}, "
                          f"got {centers.shape} and {radii.shape}")
    if not (np.isfinite(centers).all() and np.isfinite(radii).all()):
        raise WrongOutput("centers or radii contain NaN or infinity")
    if (radii < 0).any():
        raise WrongOutput(f"negative radius at index {int(np.argmin(radii))}")
    x, y = centers[:, 0], centers[:, 1]
    outside = np.minimum.reduce([x - radii, y - radii, 1 - x - radii, 1 - y - radii])
    if (outside < -tolerance).any():
        i = int(np.argmin(outside))
        raise WrongOutput(f"circle {i} leaves the unit square by {-outside[i]:.3g}")
    dist = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
    gap = dist - (radii[:, None] + radii[None, :])
    np.fill_diagonal(gap, np.inf)
    if (gap < -tolerance).any():
        i, j = np.unravel_index(int(np.argmin(gap)), gap.shape)
        raise WrongOutput(f"circles {i} and {j} overlap by {-gap[i, j]:.3g}")
    return centers, radii


def evaluate(candidate: Candidate) -> StageReport:
    centers, radii = check_packing(candidate.call("run_packing"))
    mean = float(radii.mean())
    metrics = {
        "sum_radii": float(radii.sum()),
        "min_radius": float(radii.min()),
        "radius_spread": float(radii.max() / mean) if mean > 0 else 1.0,
        "run_seconds": candidate.call_seconds[-1],
    }
    # The packing as validated above (our own float64 arrays, not the candidate's objects), for the picture that
    # problems/circle_packing/render.py draws in `evolve ui` and the HTML report.
    packing = json.dumps({"centers": centers.tolist(), "radii": radii.tolist()})
    return StageReport(metrics, {"packing": packing})


def recheck(candidate: Candidate) -> StageReport:
    """Held-out stage: another run, in a fresh process, valid at ``STRICT_TOLERANCE``; no artifact."""
    _, radii = check_packing(candidate.call("run_packing"), STRICT_TOLERANCE)
    return StageReport({"heldout_sum_radii": float(radii.sum())})
