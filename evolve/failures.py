"""Why a run's programs failed: failed programs grouped by status and normalised message, most frequent first.

Messages differ in their numbers, program ids, paths and line numbers ("circle 3 leaves the unit square by 0.05",
"circle 17 leaves the unit square by 0.2"); normalising those away turns hundreds of failures into the few reasons
worth fixing. Reads the archive through ``evolve.query.RunArchive`` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evolve.query import RunArchive
from evolve.types import NOT_FAILURES, NOT_FAILURES_SQL, Status

# Outcomes that are not failures: scored programs, and identical children that were never evaluated.
NOT_FAILED = NOT_FAILURES  # from evolve.types: ok, duplicate, not_novel
MESSAGE_LIMIT = 200  # characters kept of a normalised reason

_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\w.\-~]*/)+[\w.\-]+")  # a/b/c.py, /tmp/x/program.py
_HEX_RE = re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{8,}\b")
_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+|nan|inf)(?:[eE][-+]?\d+)?(?![\w.])")
_LINE_RE = re.compile(r"\bline \d+")
_SPACE_RE = re.compile(r"\s+")


def normalise_message(text: str) -> str:
    """The message with what varies between occurrences replaced: paths ``<path>``, hex ids and addresses
    ``<id>``, line numbers ``line <n>``, other numbers ``<n>``; its first non-empty line, whitespace collapsed."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = _PATH_RE.sub("<path>", line)
    line = _HEX_RE.sub("<id>", line)
    line = _LINE_RE.sub("line <n>", line)
    line = _NUMBER_RE.sub("<n>", line)
    line = _SPACE_RE.sub(" ", line).strip()
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 3] + "..."


def _mapping(value: Any) -> dict[str, Any]:
    """A JSON-text column, or the same data as an Arrow struct or map (a dict or a list of pairs)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError:
            return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list) and all(isinstance(p, tuple | list) and len(p) == 2 for p in value):
        return {str(k): v for k, v in value}
    return {}


def _stages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else []
        except ValueError:
            return []
    return [_mapping(stage) for stage in value] if isinstance(value, list) else []


def failure_message(row: Mapping[str, Any]) -> str:
    """What the archive says went wrong with one program: the recorded message, else the last failed stage's,
    else the edit error."""
    message = _mapping(row.get("artifacts")).get("message")
    if isinstance(message, str) and message.strip():
        return message
    for stage in reversed(_stages(row.get("stages"))):
        text = stage.get("message")
        if stage.get("status") not in (None, Status.OK.value) and isinstance(text, str) and text.strip():
            return text
    return str(row.get("edit_error") or "")


@dataclass(frozen=True)
class FailureGroup:
    """Failed programs sharing a status and a normalised message."""

    status: str
    reason: str
    count: int
    example_id: str  # the earliest program of the group
    example_message: str  # its message as recorded
    first_iteration: int
    last_iteration: int

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "count": self.count, "example_id": self.example_id,
                "example_message": self.example_message, "first_iteration": self.first_iteration,
                "last_iteration": self.last_iteration}


@dataclass(frozen=True)
class FailureSummary:
    """Every failure group of a run (most frequent first), and how many programs the run recorded."""

    programs: int  # distinct programs recorded, the seed and identical children included
    failed: int
    groups: tuple[FailureGroup, ...]

    @property
    def failed_share(self) -> float:
        return self.failed / self.programs if self.programs else 0.0

    def top(self, n: int) -> tuple[FailureGroup, ...]:
        return self.groups[:n]

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        groups = self.groups if limit is None else self.groups[:limit]
        return {"programs": self.programs, "failed": self.failed, "failed_share": self.failed_share,
                "groups": [g.to_dict() for g in groups], "groups_total": len(self.groups)}


def group_failures(rows: Iterable[Mapping[str, Any]]) -> tuple[FailureGroup, ...]:
    """Group failed rows (``program_id``, ``iteration``, ``status`` and the message columns; one row per program,
    in iteration order) by status and normalised message: most frequent first, ties by status then reason."""
    found: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        status = str(row.get("status") or "")
        if status in NOT_FAILED:
            continue
        message = failure_message(row)
        iteration = int(row.get("iteration") or 0)
        key = (status, normalise_message(message))
        entry = found.get(key)
        if entry is None:
            found[key] = [1, str(row.get("program_id") or ""), message.strip(), iteration, iteration]
        else:
            entry[0] += 1
            if iteration < entry[3]:  # rows may come in any order: the example is the earliest
                entry[1], entry[2], entry[3] = str(row.get("program_id") or ""), message.strip(), iteration
            entry[4] = max(entry[4], iteration)
    groups = [FailureGroup(status, reason, count, example, text, first, last)
              for (status, reason), (count, example, text, first, last) in found.items()]
    groups.sort(key=lambda g: (-g.count, g.status, g.reason))
    return tuple(groups)


def summarise_failures(archive: RunArchive) -> FailureSummary:
    """The failure groups of the run ``archive`` reads (its journal included, so a live run can be asked)."""
    table = archive.table(where=f"status IS NULL OR status NOT IN {NOT_FAILURES_SQL}",
                          columns=["program_id", "iteration", "status", "edit_error", "artifacts", "stages"])
    rows = table.to_pylist()
    return FailureSummary(programs=archive.count(), failed=len(rows), groups=group_failures(rows))
