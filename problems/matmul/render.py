"""Picture of a kernel for ``evolve ui`` and the HTML report: throughput per benchmarked shape against cuBLAS.

Reads the bench stage's trusted metrics ``tflops_<M>x<N>x<K>`` and ``cublas_tflops_<M>x<N>x<K>`` (medians the
evaluator measured in one process, interleaved). Draws nothing for a kernel the bench did not measure (no GPU, or
it failed an earlier stage).
"""

from __future__ import annotations

import math
import re
from typing import Any

from evolve.ui.svg import document, esc, nice_ticks, num, text

_SHAPE = re.compile(r"^tflops_(\d+x\d+x\d+)$")
KERNEL, CUBLAS = "#1f77b4", "#9e9e9e"
BAR, GAP, GROUP_GAP, HEIGHT, LEFT = 34.0, 6.0, 36.0, 220.0, 56.0


def measured_shapes(metrics: dict[str, Any]) -> list[tuple[str, float, float]]:
    """``[(shape, kernel TFLOP/s, cuBLAS TFLOP/s)]`` for every shape with both figures finite."""
    out = []
    for key, value in metrics.items():
        match = _SHAPE.match(key)
        if not match:
            continue
        shape = match.group(1)
        try:
            kernel, cublas = float(value), float(metrics.get(f"cublas_tflops_{shape}", math.nan))
        except (TypeError, ValueError):
            continue
        if math.isfinite(kernel) and math.isfinite(cublas) and kernel >= 0 and cublas > 0:
            out.append((shape, kernel, cublas))
    return sorted(out, key=lambda item: [int(v) for v in item[0].split("x")])


def render(program: dict[str, Any]) -> str:
    shapes = measured_shapes(program.get("metrics") or {})
    if not shapes:
        return ""
    top = max(max(k, c) for _, k, c in shapes) * 1.15
    width = LEFT + len(shapes) * (2 * BAR + GAP + GROUP_GAP) + 20
    base = 30 + HEIGHT

    def y(v: float) -> float:
        return base - v / top * HEIGHT

    parts = [text(LEFT, 18, "throughput per shape (TFLOP/s, median): kernel vs cuBLAS", 12, weight="bold")]
    for t in nice_ticks(0.0, top, 5):
        parts.append(f'<line x1="{num(LEFT)}" x2="{num(width - 10)}" y1="{num(y(t))}" y2="{num(y(t))}" '
                     'stroke="#eee"/>')
        parts.append(text(LEFT - 6, y(t) + 4, f"{t:.3g}", 10, "end", "#666"))
    for i, (shape, kernel, cublas) in enumerate(shapes):
        x = LEFT + GROUP_GAP / 2 + i * (2 * BAR + GAP + GROUP_GAP)
        for offset, value, colour, who in ((0.0, kernel, KERNEL, "kernel"), (BAR + GAP, cublas, CUBLAS, "cuBLAS")):
            parts.append(f'<rect x="{num(x + offset)}" y="{num(y(value))}" width="{num(BAR)}" '
                         f'height="{num(base - y(value))}" fill="{colour}">'
                         f"<title>{esc(f'{who} {shape}: {value:.3f} TFLOP/s')}</title></rect>")
        parts.append(text(x + BAR + GAP / 2, base + 16, shape, 10, "middle"))
        parts.append(text(x + BAR + GAP / 2, base + 30, f"{100 * kernel / cublas:.1f}% of cuBLAS", 10, "middle",
                          "#1f4e79"))
    parts.append(f'<line x1="{num(LEFT)}" x2="{num(width - 10)}" y1="{num(base)}" y2="{num(base)}" stroke="#333"/>')
    legend_x = width - 170
    parts.append(f'<rect x="{num(legend_x)}" y="8" width="10" height="10" fill="{KERNEL}"/>')
    parts.append(text(legend_x + 14, 17, "kernel", 10))
    parts.append(f'<rect x="{num(legend_x + 70)}" y="8" width="10" height="10" fill="{CUBLAS}"/>')
    parts.append(text(legend_x + 84, 17, "cuBLAS", 10))
    return document(width, base + 44, "".join(parts), title="throughput against cuBLAS")
