"""``run.json``: what a run is, the settings it continues with, its state, and which run is "the latest".

``run.json`` stores everything needed to continue a run with ``evolve run PROBLEM --resume`` alone: the run
settings, the mutator, the LLM settings (endpoint, models and their weights, budgets; never an API key), the
problem's ``[prompt]`` and ``[sandbox]`` tables and the sandbox requirement. A flag given on resume overrides the
stored value; each session's overrides are kept in ``history``.

A run that never got going (its seed failed, or it stopped before its seed was recorded) is marked
``failed_start``; such runs are never picked as the latest run of a problem.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from evolve.segments import JOURNAL_DIR, SEGMENTS_DIR, write_json_atomic

RUN_INFO = "run.json"
STATS_FILE = "stats.json"
PROBLEM_SNAPSHOT = "problem.toml"


class RunState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED_START = "failed_start"  # never got going: not a run to resume or to show by default


def write_run_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    """Atomically write ``run.json`` (run id, problem, settings, seed, created time: whatever the loop records)."""
    write_json_atomic(Path(run_dir) / RUN_INFO, info)


def load_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run folder; ``{}`` when the run has none yet."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def read_json_quietly(path: Path) -> dict[str, Any]:
    """A JSON object file as a dict, ``{}`` if missing or unreadable (listings must not stop on one bad run)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_info_quietly(run_dir: Path) -> dict[str, Any]:
    return read_json_quietly(run_dir / RUN_INFO)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (RUN_INFO, SEGMENTS_DIR, JOURNAL_DIR))


def list_runs(root: str | Path = "archive") -> list[Path]:
    """Run folders under ``root`` (``<root>/<problem>/<run-id>/``), sorted by problem then run id."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for problem_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for run_dir in sorted(p for p in problem_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if is_run_dir(run_dir):
                runs.append(run_dir)
    return runs


def created_at(run_dir: Path, info: Mapping[str, Any] | None = None) -> float:
    info = read_info_quietly(run_dir) if info is None else info
    value = info.get("created_at")
    return float(value) if isinstance(value, int | float) else run_dir.stat().st_mtime


def is_failed_start(run_dir: Path) -> bool:
    return read_info_quietly(run_dir).get("state") == RunState.FAILED_START.value


@dataclass(frozen=True)
class LatestRun:
    """The newest run of a problem folder, and the failed starts passed over to find it."""

    run_dir: Path | None
    failed_starts: tuple[Path, ...] = ()


def latest_run(problem_dir: Path) -> LatestRun:
    """The newest run (by creation time) of ``archive/<problem>``; failed starts are never picked."""
    if not problem_dir.is_dir():
        return LatestRun(None)
    infos = {p: read_info_quietly(p) for p in sorted(problem_dir.iterdir()) if is_run_dir(p)}  # each read once
    failed = tuple(p for p, info in infos.items() if info.get("state") == RunState.FAILED_START.value)
    good = [p for p in infos if p not in failed]
    return LatestRun(max(good, key=lambda p: created_at(p, infos[p])) if good else None, failed)


# ---------------------------------------------------------------------------------------------------------------
# Settings a run continues with


@dataclass(frozen=True)
class RunConfig:
    """What continuing a run needs besides ``RunSettings`` and the problem folder. Never holds a secret."""

    llm: dict[str, Any] | None = None  # LLMSettings.to_dict(): endpoint, models with weights and prices, budgets
    prompt: dict[str, Any] | None = None  # the problem's [prompt] table as the run used it
    sandbox: dict[str, Any] | None = None  # the problem's [sandbox] table as the run used it
    sandbox_require: str | None = None  # --sandbox-require, when given
    search: dict[str, Any] | None = None  # the [search] table as the run used it (flags included)

    def to_info(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.llm is not None:
            data["llm"] = {k: v for k, v in self.llm.items() if "key" not in k or k == "api_key_set"}
        if self.prompt is not None:
            data["prompt"] = dict(self.prompt)
        if self.sandbox is not None or self.sandbox_require is not None:
            data["sandbox"] = {"table": dict(self.sandbox or {}), "require": self.sandbox_require}
        if self.search is not None:
            data["search"] = dict(self.search)
        return data

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> RunConfig:
        sandbox = info.get("sandbox") if isinstance(info.get("sandbox"), dict) else {}
        return cls(
            llm=info.get("llm") if isinstance(info.get("llm"), dict) else None,
            prompt=info.get("prompt") if isinstance(info.get("prompt"), dict) else None,
            sandbox=sandbox.get("table") if isinstance(sandbox.get("table"), dict) else None,
            sandbox_require=sandbox.get("require") if isinstance(sandbox.get("require"), str) else None,
            search=info.get("search") if isinstance(info.get("search"), dict) else None,
        )


@dataclass(frozen=True)
class Resumed:
    """Settings for a resumed session: the stored ones with the flags given now on top."""

    settings: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {"stored": ..., "given": ...}


def merge_given(stored: Mapping[str, Any], given: Mapping[str, Any]) -> Resumed:
    """``stored`` run settings with every non-``None`` ``given`` value on top; differences recorded."""
    merged = dict(stored)
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        if value is None:
            continue
        if key in stored and stored[key] != value:
            overrides[key] = {"stored": stored[key], "given": value}
        elif key not in stored:
            overrides[key] = {"stored": None, "given": value}
        merged[key] = value
    return Resumed(merged, overrides)


def session_entry(session: int, overrides: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"session": session, "started_at": time.time()}
    if overrides:
        entry["overrides"] = dict(overrides)
    entry.update({k: v for k, v in extra.items() if v})
    return entry
