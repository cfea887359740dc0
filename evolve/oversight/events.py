"""The oversight events a run records in its append-only ``events`` table (see ``archive/README.md``).

Every event is about one program (``program_id``) and its ``data`` is a JSON object:

``check``        a check started: ``check`` (its number for the program), ``reason`` (top_k, reconsider, quarantine,
                 resume), the program's ``fitness``, ``score``, ``iteration`` and ``visible`` figure.
``heldout``      the held-out stages' run: per stage its status, metrics, artifacts, message and seconds, and the
                 comparison (``visible``, ``heldout``, ``behind``, ``allowance``, ``agrees``).
``reevaluation`` the re-evaluations of the visible cascade with other seeds: per run its status and score, and
                 ``reproduces``, ``spread``, ``allowance``.
``tripwire``     a tripwire fired: ``tripwire`` (bound, jump, gap, anomaly), ``message``, ``phase`` (arrival or
                 check) and the numbers that made it fire.
``anomaly``      an evaluator-declared anomaly on the visible cascade (kept so a deterministic resume that replays
                 the row trips the same wire).
``standing``     a standing decided: ``standing``, ``previous``, ``check`` (the check's number, or null for a
                 quarantine on arrival and a person's release), ``reasons``, the check's numbers, ``fitness``,
                 ``score``, ``iteration``.
``release``      a quarantine lifted: ``by`` ("evolve" after a clean re-check, or a person), ``note``.
``approval``     a person's decision: ``decision`` (approved or rejected), ``by``, ``note``, ``code_sha256``,
                 ``standing`` at the time, ``forced`` (approved although not promoted), ``at`` (epoch seconds).

Ids are derived from content where a resume may record the same event again (``check:<program>:<n>``), so a
repeated record keeps one row.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

CHECK = "check"
HELDOUT = "heldout"
REEVALUATION = "reevaluation"
TRIPWIRE = "tripwire"
ANOMALY = "anomaly"
STANDING = "standing"
RELEASE = "release"
APPROVAL = "approval"
KINDS = (CHECK, HELDOUT, REEVALUATION, TRIPWIRE, ANOMALY, STANDING, RELEASE, APPROVAL)
STATE_KINDS = (CHECK, TRIPWIRE, ANOMALY, STANDING, RELEASE)  # what standings are rebuilt from

ARRIVAL, CHECKED = "arrival", "check"  # when a tripwire fired: as the program arrived, or in its check
AUTO = "evolve"  # who released a quarantine after a clean re-check


def event_id(kind: str, program_id: str, *parts: Any) -> str:
    return ":".join([kind, program_id, *(str(p) for p in parts)])


def payload(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as the events table takes it: JSON only (a NaN or an infinity becomes its text) with ``ns``, the
    recording clock in nanoseconds, which orders events recorded within the same millisecond."""
    return {**_json_safe(data), "ns": time.time_ns()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def decoded(data: Any) -> dict[str, Any]:
    """An event's ``data`` as a dict, whether it comes decoded (``RunArchive.events``) or as JSON text."""
    if isinstance(data, dict):
        return data
    try:
        value = json.loads(data or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def event_rows(table: Any) -> list[dict[str, Any]]:
    """Rows of an events table (pyarrow, EVENT_SCHEMA) or a list of event dicts, ``data`` decoded, in recorded
    order (``ns`` where the event has it: the table's own order is by millisecond, then id)."""
    rows = table.to_pylist() if hasattr(table, "to_pylist") else list(table or [])
    out = [{**row, "data": decoded(row.get("data"))} for row in rows]
    return sorted(out, key=_recorded_ns)


def _recorded_ns(row: dict[str, Any]) -> int:
    ns = row["data"].get("ns")
    if isinstance(ns, int):
        return ns
    at = row.get("created_at")
    return int(at.timestamp() * 1e9) if hasattr(at, "timestamp") else 0
