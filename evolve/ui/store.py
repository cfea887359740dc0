"""Every run under a root folder (a run folder, a problem folder of the archive, or the archive root), each a
``evolve.ui.data.RunSource``; at most a few runs' connections stay open."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

from evolve.query import ArchiveQueryError, ArchiveRoot, RunNotFound
from evolve.ui.data import RunSource
from evolve.ui.versions import last_write

MAX_OPEN_RUNS = 4  # runs whose DuckDB connection (and in-memory summary) stay open


class RunStore:
    """The runs under ``root`` (a run folder, a problem folder of the archive, or the archive root), rescanned
    when asked (runs appear while the UI is open). Keys are the run's path under the root, ``/`` written ``~``."""

    def __init__(self, root: str | Path, rescan_seconds: float = 2.0):
        self.root = Path(root)
        if not self.root.exists():
            raise RunNotFound(f"{self.root}: no such folder")
        self.rescan_seconds = rescan_seconds
        self._sources: dict[str, RunSource] = {}
        self._scanned = -math.inf
        self._lock = threading.Lock()

    def _key(self, run_dir: Path) -> str:
        try:
            rel = run_dir.relative_to(self.root)
        except ValueError:
            rel = Path(run_dir.name)
        return "~".join(rel.parts) or run_dir.name

    def scan(self, force: bool = False) -> list[RunSource]:
        with self._lock:
            now = time.monotonic()
            if force or now - self._scanned >= self.rescan_seconds:
                self._scanned = now
                for run_dir in ArchiveRoot.scan(self.root).runs:
                    key = self._key(run_dir)
                    if key not in self._sources:
                        self._sources[key] = RunSource(key, run_dir)
                for key in [k for k, s in self._sources.items() if not s.run_dir.is_dir()]:
                    self._sources.pop(key).close()
            return list(self._sources.values())

    def get(self, key: str) -> RunSource:
        source = self._sources.get(key)
        if source is None:
            self.scan(force=True)
            source = self._sources.get(key)
        if source is None:
            raise RunNotFound(f"no run {key!r} under {self.root}")
        self._close_idle(keep=source)
        return source

    def _close_idle(self, keep: RunSource) -> None:
        """Keep at most ``MAX_OPEN_RUNS`` connections (each holds its run's summary in memory)."""
        open_ = sorted((s for s in self._sources.values() if s.is_open and s is not keep),
                       key=lambda s: s.last_used, reverse=True)
        for idle in open_[MAX_OPEN_RUNS - 1:]:
            idle.close()

    def listings(self) -> list[dict[str, Any]]:
        out = []
        for source in self.scan():
            try:
                out.append(source.listing())
            except ArchiveQueryError as exc:
                out.append({"key": source.key, "run_id": source.run_dir.name, "problem": "", "state": "unreadable",
                            "programs": 0, "best_score": None, "best_program": None, "created_at": None,
                            "error": str(exc), "last_write": last_write(source.run_dir)})
        return sorted(out, key=lambda r: (-(r.get("created_at") or 0), r["key"]))

    def close(self) -> None:
        with self._lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()
