"""Picture of an optimizer for ``evolve ui`` and the HTML report: the loss curve of each training task.

Reads the ``loss_curves`` artifact of the "train" stage (the loss at steps 1, 50, 100, ... of the first seed of
each task, as the training process reported it: informative only) and the ``tasks`` table (the trusted per-task
score against tuned Adam, recomputed by the evaluator), one small chart per task on a log10 scale.
"""

from __future__ import annotations

import math
import re
from typing import Any

from evolve.ui.svg import PALETTE, document, line_panel, text

PANEL_W, PANEL_H, COLUMNS = 260.0, 170.0, 2
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


def _artifact(artifacts: dict[str, Any], name: str) -> str:
    for key, value in artifacts.items():
        if (key == name or key.endswith("." + name)) and isinstance(value, str):
            return value
    return ""


def parse_curves(textblock: str) -> dict[str, list[tuple[float, float]]]:
    """``{task: [(step, loss), ...]}`` from the artifact; unreadable values ("?") are skipped."""
    lines = textblock.strip().splitlines()
    if not lines:
        return {}
    header = [float(v) for v in _NUMBER.findall(lines[0].split(":")[0])]
    every = header[1] if len(header) > 1 and header[1] > 0 else 1.0
    curves: dict[str, list[tuple[float, float]]] = {}
    for line in lines[1:]:
        name, sep, values = line.partition(":")
        if not sep or not name.strip():
            continue
        points = []
        for i, raw in enumerate(values.split(",")):
            try:
                value = float(raw)
            except ValueError:
                continue
            if math.isfinite(value):
                points.append((1.0 if i == 0 else i * every, value))
        curves[name.strip()[:40]] = points
    return curves


def parse_scores(table: str) -> dict[str, float]:
    """``{task: score against tuned Adam}`` from the ``tasks`` table."""
    scores = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            try:
                scores[fields[0][:40]] = float(fields[1])
            except ValueError:
                continue
    return scores


def render(program: dict[str, Any]) -> str:
    artifacts = program.get("artifacts") or {}
    curves = parse_curves(_artifact(artifacts, "loss_curves"))
    if not curves:
        return ""
    scores = parse_scores(_artifact(artifacts, "tasks"))
    parts = []
    for i, (task, points) in enumerate(curves.items()):
        col, row = i % COLUMNS, i // COLUMNS
        x0, y0 = 10 + col * (PANEL_W + 20), 34 + row * (PANEL_H + 34)
        logged = [(s, math.log10(v)) for s, v in points if v > 0]
        score = scores.get(task)
        title = f"{task}: {score:+.2f} vs Adam" if score is not None and math.isfinite(score) else task
        parts.append(line_panel(x0, y0, PANEL_W, PANEL_H, [(task, PALETTE[i % len(PALETTE)], logged)],
                                title=title, xlabel="step", ylabel="log10 loss"))
    rows = math.ceil(len(curves) / COLUMNS)
    width = 10 + COLUMNS * (PANEL_W + 20)
    height = 34 + rows * (PANEL_H + 34)
    caption = "training loss per task (as reported by the training process); title: trusted score vs tuned Adam"
    parts.insert(0, text(10, 16, caption, 11, fill="#555"))
    return document(width, height, "".join(parts), title="loss curves per task")
