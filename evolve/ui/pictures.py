"""Problem pictures: a problem's trusted renderer turns a program's validated data into SVG.

A problem declares its renderer in ``problem.toml``::

    [ui]
    renderer = "render.py"      # a file of the problem folder defining render(program: dict) -> str

``render`` receives the program's trusted data only: ``program_id``, ``status``, ``score``, ``metrics``,
``features`` and ``artifacts`` (what the evaluator stored; never the candidate's code) and returns an SVG document,
or ``""`` when it has nothing to draw. It runs in the process that shows the picture (the UI or the report), as
trusted code of the problem, like its evaluator; its output still goes through ``sanitize_svg``.

The key is read from the raw TOML of the problem folder named in the run's ``run.json`` (``problem_root``), and the
file must lie inside that folder.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.schema import ProgramRecord
from evolve.ui.svg import UnsafeSvg, sanitize_svg

Renderer = Callable[[dict[str, Any]], str]
_loaded: dict[tuple[str, int], Renderer] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Picture:
    """A sanitised SVG, or why there is none (``svg`` empty and ``error`` set, or both empty: nothing to draw)."""

    svg: str = ""
    error: str = ""

    def data_uri(self) -> str:
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg.encode("utf-8")).decode("ascii")


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def renderer_path(run_dir: str | Path, info: Mapping[str, Any]) -> Path | None:
    """The renderer file that a run's problem folder declares (``[ui] renderer``), or None.

    ``run_dir`` is unused today (the renderer lives with the problem, not the run) and kept so that a renderer
    snapshot in the run folder could be preferred later without changing callers.
    """
    del run_dir
    if not info.get("problem_root"):
        return None
    root = Path(str(info["problem_root"]))
    table = _toml(root / "problem.toml").get("ui")
    name = table.get("renderer") if isinstance(table, dict) else None
    if not isinstance(name, str) or not name:
        return None
    path = (root / name).resolve()
    return path if path.is_file() and path.is_relative_to(root.resolve()) else None


def load_renderer(path: Path) -> Renderer:
    """The ``render`` function of ``path`` (imported once per file version)."""
    key = (str(path), path.stat().st_mtime_ns)
    with _lock:
        if key not in _loaded:
            name = "evolve_renderer_" + hashlib.sha256(key[0].encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            function = getattr(module, "render", None)
            if not callable(function):
                raise ImportError(f"{path} defines no render(program) function")
            _loaded[key] = function
        return _loaded[key]


def program_data(record: ProgramRecord) -> dict[str, Any]:
    """What a renderer is given: the program's stored, evaluator-produced data (no code)."""
    return {"program_id": record.program_id, "status": record.status, "score": record.score,
            "metrics": dict(record.metrics), "features": dict(record.features), "artifacts": dict(record.artifacts)}


def render_picture(path: Path | None, record: ProgramRecord) -> Picture:
    """Run the renderer at ``path`` on ``record``; errors become ``Picture.error`` (a page must still load)."""
    if path is None:
        return Picture()
    try:
        markup = load_renderer(path)(program_data(record))
    except Exception as exc:  # noqa: BLE001 - a broken renderer must not break the page
        return Picture(error=f"the renderer {path.name} failed: {type(exc).__name__}: {exc}")
    if not markup:
        return Picture()
    try:
        return Picture(svg=sanitize_svg(markup))
    except UnsafeSvg as exc:
        return Picture(error=f"the renderer {path.name} returned unusable SVG: {exc}")


def picture_for(run_dir: str | Path, info: Mapping[str, Any], record: ProgramRecord) -> Picture:
    """The picture of ``record`` in the run at ``run_dir`` (``info``: its ``run.json``), for the UI and the report."""
    return render_picture(renderer_path(run_dir, info), record)
