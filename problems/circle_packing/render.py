"""Picture of a packing for ``evolve ui`` and the HTML report: the unit square and the circles the evaluator validated.

Reads ``artifacts["packing"]``: the JSON ``{"centers": [[x, y], ...], "radii": [...]}`` that the trusted evaluator
stores after ``check_packing`` accepted it (never the candidate's own output). Circles are coloured by radius.
"""

from __future__ import annotations

import json
import math
from typing import Any

from evolve.ui.svg import document, esc, num, text, viridis

MAX_CIRCLES = 2000
SIDE = 400.0
MARGIN = 12.0


def packing_of(artifacts: dict[str, Any]) -> tuple[list[tuple[float, float]], list[float]] | None:
    """The stored packing, or None when there is none or it is malformed."""
    for key, value in artifacts.items():
        if key != "packing" and not key.endswith(".packing"):
            continue
        try:
            data = json.loads(value)
            centers = [(float(x), float(y)) for x, y in data["centers"]]
            radii = [float(r) for r in data["radii"]]
        except (TypeError, ValueError, KeyError):
            return None
        values = [v for c in centers for v in c] + radii
        if len(centers) != len(radii) or not 0 < len(radii) <= MAX_CIRCLES or \
                not all(math.isfinite(v) for v in values):
            return None
        return centers, radii
    return None


def render(program: dict[str, Any]) -> str:
    packing = packing_of(program.get("artifacts") or {})
    if packing is None:
        return ""
    centers, radii = packing
    top = max(radii) or 1.0
    low = min(radii)
    span = (top - low) or 1.0

    def px(v: float) -> float:
        return MARGIN + v * SIDE

    def py(v: float) -> float:
        return MARGIN + (1.0 - v) * SIDE  # y grows upwards, as in the problem

    parts = [f'<rect x="{num(MARGIN)}" y="{num(MARGIN)}" width="{num(SIDE)}" height="{num(SIDE)}" fill="#fafafa" '
             'stroke="#333" stroke-width="1.5"/>']
    for i, ((x, y), r) in enumerate(zip(centers, radii, strict=True)):
        colour = viridis((r - low) / span)
        parts.append(f'<circle cx="{num(px(x), 3)}" cy="{num(py(y), 3)}" r="{num(max(0.0, r) * SIDE, 3)}" '
                     f'fill="{colour}" fill-opacity="0.75" stroke="#222" stroke-width="0.6">'
                     f"<title>{esc(f'circle {i}: center ({x:.6f}, {y:.6f}), radius {r:.6f}')}</title></circle>")
    total = sum(radii)
    caption = f"{len(radii)} circles, sum of radii {total:.10g}"
    parts.append(text(MARGIN + SIDE / 2, 2 * MARGIN + SIDE + 6, caption, 13, "middle"))
    return document(SIDE + 2 * MARGIN, SIDE + 3 * MARGIN + 10, "".join(parts), title=caption)
