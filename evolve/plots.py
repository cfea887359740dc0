"""PNG plots of a run: score over iterations, failure rates over time, the MAP-Elites heatmap of each island.

Figures are built with matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``: no global state,
no display needed, safe in threads and in a Ray driver.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evolve.query import GridMap, ProblemView, RunArchive

# One colour per status, stable across plots (failures in warm colours, ok in green).
STATUS_COLORS = {
    "ok": "#2e7d32",
    "rejected": "#9e9d24",
    "wrong_output": "#ef6c00",
    "runtime_error": "#c62828",
    "compile_error": "#6a1b9a",
    "timeout": "#1565c0",
    "memory": "#00838f",
    "invalid_edit": "#757575",
    "evaluator_error": "#000000",
    "system_error": "#5d4037",
}
MAX_WINDOWS = 40
MAX_DOTS = 20_000


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _windows(iterations: np.ndarray) -> np.ndarray:
    """Window index of each row: up to ``MAX_WINDOWS`` equal spans of iterations, at least 5 programs each."""
    if iterations.size == 0:
        return np.zeros(0, dtype=np.int64)
    count = max(1, min(MAX_WINDOWS, iterations.size // 5))
    lo, hi = float(iterations.min()), float(iterations.max())
    if hi <= lo:
        return np.zeros(iterations.size, dtype=np.int64)
    return np.minimum(count - 1, ((iterations - lo) / (hi - lo) * count).astype(np.int64))


def _column(history: pa.Table, name: str, dtype: type = float) -> np.ndarray:
    column = history.column(name)
    if dtype is float:
        return pc.fill_null(column.cast(pa.float64()), math.nan).to_numpy()
    return np.asarray(column.fill_null("").to_numpy(zero_copy_only=False), dtype=object)


def progress_figure(history: pa.Table, problem: ProblemView) -> Figure:
    """Every scored program as a dot, the best so far as a step line, the median score of each window of
    iterations as a line."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    iterations = _column(history, "iteration")
    scores = _column(history, "score")
    status = _column(history, "status", str)
    ok = (status == "ok") & np.isfinite(scores)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{problem.score_metric} ({problem.direction})")
    ax.set_title(f"{problem.name}: score over iterations")
    if not ok.any():
        ax.text(0.5, 0.5, "no scored program yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        return fig
    xs, ys = iterations[ok], scores[ok]
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    stride = max(1, xs.size // MAX_DOTS)  # a million dots draw slowly and show nothing more than 20,000
    ax.scatter(xs[::stride], ys[::stride], s=12, alpha=0.5, color="#607d8b",
               label="scored programs" if stride == 1 else f"scored programs (1 in {stride})", linewidths=0)
    best = np.maximum.accumulate(ys * problem.sign) * problem.sign
    ax.step(xs, best, where="post", color="#2e7d32", linewidth=2, label="best so far")
    windows = _windows(xs)
    centers, medians = [], []
    for w in np.unique(windows):
        mask = windows == w
        centers.append(float(np.median(xs[mask])))
        medians.append(float(np.median(ys[mask])))
    ax.plot(centers, medians, color="#ef6c00", linewidth=1.5, marker="o", markersize=3, label="median (window)")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def failures_figure(history: pa.Table) -> Figure:
    """Share of each outcome per window of iterations (stacked), so rising failure rates stand out."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    ax.set_title("outcomes over time")
    ax.set_xlabel("iteration")
    ax.set_ylabel("share of programs")
    iterations = _column(history, "iteration")
    status = _column(history, "status", str)
    if iterations.size == 0:
        ax.text(0.5, 0.5, "no program yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        return fig
    windows = _windows(iterations)
    ids = np.unique(windows)
    centers = np.array([float(np.mean(iterations[windows == w])) for w in ids])
    totals = np.array([float(np.sum(windows == w)) for w in ids])
    present = [s for s in STATUS_COLORS if (status == s).any()] + sorted(
        {str(s) for s in status} - set(STATUS_COLORS))
    shares = [np.array([np.sum((windows == w) & (status == s)) for w in ids]) / totals for s in present]
    colors = [STATUS_COLORS.get(s, "#9e9e9e") for s in present]
    if len(ids) == 1:
        bottom = 0.0
        for s, share, color in zip(present, shares, colors, strict=True):
            ax.bar([centers[0]], share, bottom=bottom, color=color, label=s, width=1.0)
            bottom += share
    else:
        ax.stackplot(centers, *shares, labels=present, colors=colors, alpha=0.85)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    return fig


def grid_matrix(grid: GridMap, x: int | None = None, y: int | None = None) -> np.ndarray:
    """Elite scores as a 2-D array (rows: feature ``y``, columns: feature ``x``; NaN: empty cell). Other features
    are maximized over (by fitness)."""
    dims = len(grid.features)
    x = (dims - 1 if dims else None) if x is None else x
    y = (0 if dims >= 2 else None) if y is None else y
    rows = grid.shape[y] if y is not None and dims else 1
    cols = grid.shape[x] if x is not None and dims else 1
    values = np.full((rows, cols), np.nan)
    fitness = np.full((rows, cols), -np.inf)
    for e in grid.elites:
        r = e.coords[y] if y is not None and dims else 0
        c = e.coords[x] if x is not None and dims else 0
        if e.fitness > fitness[r, c] and e.score is not None:
            fitness[r, c] = e.fitness
            values[r, c] = e.score
    return values


def map_figure(grid: GridMap, problem: ProblemView) -> Figure:
    """Heatmap of one island's elites: each occupied cell coloured by its elite's score, empty cells blank."""
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    dims = len(grid.features)
    values = grid_matrix(grid)
    fx = grid.features[dims - 1] if dims else None
    fy = grid.features[0] if dims >= 2 else None
    extent = (
        fx.min if fx else 0.0, fx.max if fx else 1.0,
        fy.min if fy else 0.0, fy.max if fy else 1.0,
    )
    cmap = "viridis" if problem.direction == "maximize" else "viridis_r"
    masked = np.ma.masked_invalid(values)
    image = ax.imshow(masked, origin="lower", aspect="auto", extent=extent, cmap=cmap, interpolation="nearest")
    ax.set_facecolor("#eeeeee")
    if not np.isnan(values).all():
        fig.colorbar(image, ax=ax, label=problem.score_metric)
    ax.set_xlabel(fx.name if fx else "")
    ax.set_ylabel(fy.name if fy else "")
    if fy is None:
        ax.set_yticks([])
    best = grid.best()
    title = f"island {grid.island}: {len(grid.elites)}/{grid.n_cells} cells"
    if best is not None:
        title += f", best {best.score:.6g}"
    ax.set_title(title)
    fig.tight_layout()
    return fig


def figures(archive: RunArchive) -> dict[str, Figure]:
    """Every plot of a run, by file stem: ``progress``, ``failures`` and ``map_island_<i>``."""
    history = archive.history()
    out = {"progress": progress_figure(history, archive.problem), "failures": failures_figure(history)}
    for grid in archive.grids():
        out[f"map_island_{grid.island}"] = map_figure(grid, archive.problem)
    return out


def write_plots(archive: RunArchive, out_dir: str | Path) -> dict[str, Path]:
    """Write every plot as ``<out_dir>/<name>.png``; return name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures(archive).items():
        path = out_dir / f"{name}.png"
        path.write_bytes(png_bytes(fig))
        paths[name] = path
    return paths
