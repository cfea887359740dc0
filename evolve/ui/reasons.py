"""Why a program failed, in one line, and that line with its variable parts normalised so that failures of the
same kind group together; and the run page's grouping of a run's latest failures by that line. A small grouping of
the UI's own (the CLI's ``evolve/failures.py`` may replace it)."""

from __future__ import annotations

import json
import re
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from evolve.types import NOT_FAILURES, NOT_FAILURES_SQL

if TYPE_CHECKING:
    from evolve.query import RunArchive

FAILURE_SAMPLE = 5000  # the most recent failures grouped by reason
DIRECT_FAILURE_FILES = 64  # up to this many segments hold failures: ask the archive directly
_FAIL_COLUMNS = ("program_id", "iteration", "status", "edit_error", "artifacts", "stages")

_HEX = re.compile(r"\b[0-9a-f]{8,64}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_QUOTED = re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"")
_PATH = re.compile(r"(?:/[\w.+-]+){2,}")
_SPACE = re.compile(r"\s+")


def normalise_message(text: str, limit: int = 160) -> str:
    """A message with its variable parts (numbers, ids, quoted values, paths) replaced, so that failures of the
    same kind share one text."""
    text = _PATH.sub("<path>", text)
    text = _QUOTED.sub("'…'", text)
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("N", text)
    text = _SPACE.sub(" ", text).strip()
    return text[:limit] or "(no message)"


def failure_reason(status: str, edit_error: str, artifacts: dict[str, Any], stages: list[Any]) -> str:
    """The first line that says why a program failed: the edit error, the loop's message, the check that failed,
    the exception line of a traceback, the failing stage's message."""
    found = stated_reason(edit_error, artifacts)
    if found is None:
        found = stage_reason(stages)
    return status if found is None else found


def stated_reason(edit_error: str, artifacts: dict[str, Any]) -> str | None:
    """``failure_reason`` from the edit error and the artifacts alone (None: they do not say)."""
    if edit_error:
        return edit_error
    for key in ("message", "check"):
        value = artifacts.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().splitlines()[0]
    for key, value in artifacts.items():
        if key.endswith("traceback") and isinstance(value, str):
            lines = [line for line in value.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
    return None


def stage_reason(stages: list[Any]) -> str | None:
    for stage in reversed(stages):
        if isinstance(stage, dict) and stage.get("message"):
            return str(stage["message"]).splitlines()[0]
    return None


def json_field(text: Any, default: Any) -> Any:
    """A column that is JSON text in older archives and a decoded map or list in newer ones, as ``default``'s type
    (a map read through pyarrow arrives as ``(key, value)`` pairs)."""
    if isinstance(default, dict) and isinstance(text, list) and all(isinstance(p, tuple) and len(p) == 2
                                                                     for p in text):
        return dict(text)
    if isinstance(text, type(default)):
        return text
    try:
        value = json.loads(text) if isinstance(text, str) and text else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def failure_groups(a: RunArchive, statuses: dict[str, int],
                   sample: int = FAILURE_SAMPLE) -> dict[str, Any]:
    """The latest ``sample`` failures grouped by status and normalised reason; ``statuses``: failures per status
    over every program."""
    total = sum(statuses.values())
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    rows, skipped = _failure_rows(a, sample) if total else ([], 0)
    reasons: dict[Any, str] = {}  # many failures repeat one message: each text is parsed once
    for pid, it, status, edit_error, artifacts, stages in rows:
        raw = (status, edit_error, artifacts, stages)
        try:
            reason = reasons[raw]
        except (KeyError, TypeError):  # TypeError: decoded maps (a small run, read through DuckDB)
            reason = _reason(status, edit_error, artifacts, stages)
            with suppress(TypeError):
                reasons[raw] = reason
        group = groups.setdefault((status, reason), {
            "status": status, "reason": reason, "count": 0, "example": pid, "first": it, "last": it})
        group["count"] += 1
        group["first"] = min(group["first"], it)
        group["last"] = max(group["last"], it)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["status"], g["reason"]))
    return {"statuses": statuses, "total": total, "sampled": len(rows), "unsampled_journal": skipped,
            "groups": ordered}


def _reason(status: Any, edit_error: Any, artifacts: Any, stages: Any) -> str:
    """A failure's normalised reason; its stages (JSON text) are parsed only when nothing else says why."""
    found = stated_reason(str(edit_error or ""), json_field(artifacts, {}))
    if found is None:
        found = stage_reason(json_field(stages, []))
    return normalise_message(str(status or "") if found is None else found)


def _failure_rows(a: RunArchive, sample: int) -> tuple[list[tuple[Any, ...]], int]:
    """The latest ``sample`` failed rows with the columns that say why. A small run is asked directly; in a large
    one only the newest segments holding them are read (opening a thousand segments costs seconds), and rows still
    in the journal are left out (their count is returned)."""
    # ``file`` (the segment holding a row) is left out of the UI's in-memory summary: the costliest column to load.
    files = a.tuples(f"SELECT file, count(*), max(iteration) AS last FROM summary WHERE status NOT IN "
                     f"{NOT_FAILURES_SQL} GROUP BY file ORDER BY last DESC")
    if len(files) <= DIRECT_FAILURE_FILES:
        return a.tuples(f"SELECT {', '.join(_FAIL_COLUMNS)} FROM programs WHERE status NOT IN "
                        f"{NOT_FAILURES_SQL} ORDER BY iteration DESC LIMIT ?", [sample], full=True), 0
    chosen, count, journal = [], 0, 0
    for name, n, _ in files:
        if not name:
            journal += int(n)
            continue
        chosen.append(name)
        count += int(n)
        if count >= sample:
            break
    rows: list[tuple[Any, ...]] = []
    for name in chosen:
        try:
            table = pq.read_table(a.run_dir / "segments" / name, columns=list(_FAIL_COLUMNS),
                                  filters=[("status", "not in", list(NOT_FAILURES))])
        except (OSError, pa.ArrowException, ValueError):
            continue  # compacted or damaged since: the archive reports damage, the grouping goes on
        rows += zip(*(table.column(c).to_pylist() for c in _FAIL_COLUMNS), strict=True)
    rows.sort(key=lambda r: -int(r[1] or 0))
    return rows[:sample], journal
