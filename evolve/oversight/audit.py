"""The audit trail of a run: every oversight decision and every event that bears on trusting its results.

In time order: promotions, held-out disagreements, flaky re-evaluations, tripwires, quarantines and releases,
approvals and rejections (from the run's events); the way each session stopped (``run.json``, ``stats.json``),
changes of the sandbox level candidates ran under (the rows' ``isolation`` column) and damage (files moved to
``damaged/``, iterations recorded as lost, damage found and not yet handled) and people's steering (each pin, ban and
note of ``steering.jsonl``; a damaged line of it is listed as damage, never dropped). Each entry names its program,
when there is one, and carries the numbers that triggered it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evolve.oversight import events as ev
from evolve.oversight.read import run_events

if TYPE_CHECKING:
    from evolve.query import RunArchive

_STANDING_ENTRY = {"promoted": "promotion", "overfit": "overfit", "flaky": "flaky", "quarantined": "quarantine",
                   "candidate": "standing"}


@dataclass(frozen=True)
class AuditEntry:
    at: float  # epoch seconds
    kind: str  # promotion, overfit, flaky, quarantine, standing, heldout_disagreement, flaky_reevaluation, tripwire,
    #            release, approval, rejection, stop, sandbox_level, damage, steering
    program_id: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"at": dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(), "kind": self.kind,
                "program_id": self.program_id, "summary": self.summary, "numbers": self.numbers}

    def line(self) -> str:
        when = dt.datetime.fromtimestamp(self.at).strftime("%Y-%m-%d %H:%M:%S")
        return f"{when}  {self.kind:<20} {self.program_id or '-':<16}  {self.summary}"


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return float(value) if isinstance(value, int | float) else 0.0


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _event_entry(row: dict[str, Any]) -> AuditEntry | None:
    kind, data, pid = row.get("kind"), row["data"], row.get("program_id") or ""
    at = _epoch(row.get("created_at"))
    if kind == ev.STANDING:
        reasons = "; ".join(data.get("reasons") or [])
        moved = f"{data.get('previous', '?')} -> {data.get('standing', '?')}"
        numbers = {k: data[k] for k in ("visible", "heldout", "behind", "allowance", "reevaluated", "spread",
                                        "score", "check", "tripwires") if data.get(k) not in (None, [])}
        return AuditEntry(at, _STANDING_ENTRY.get(str(data.get("standing")), "standing"), pid,
                          f"{moved}: {reasons}", numbers)
    failed = [s for s in data.get("stages") or [] if s.get("status") != "ok"] if kind == ev.HELDOUT else []
    if kind == ev.HELDOUT and (data.get("agrees") is False or failed):
        what = (f"held-out stage {failed[-1].get('stage')!r} {failed[-1].get('status')}: {failed[-1].get('message')}"
                if failed else f"held-out {data.get('metric')} {_fmt(data.get('heldout'))} vs visible "
                f"{_fmt(data.get('visible'))} (behind {_fmt(data.get('behind'))}, allowance "
                f"{_fmt(data.get('allowance'))})")
        numbers = {k: data.get(k) for k in ("visible", "heldout", "behind", "allowance", "metric")}
        return AuditEntry(at, "heldout_disagreement", pid, what, numbers)
    if kind == ev.REEVALUATION and data.get("reproduces") is False:
        runs = data.get("runs") or []
        scores = ", ".join(_fmt(r.get("score")) if r.get("score") is not None else str(r.get("status")) for r in runs)
        return AuditEntry(at, "flaky_reevaluation", pid, f"visible {_fmt(data.get('visible'))}, re-evaluated: "
                          f"{scores} (allowance {_fmt(data.get('allowance'))})",
                          {k: data.get(k) for k in ("visible", "spread", "allowance")} | {"runs": runs})
    if kind == ev.TRIPWIRE:
        numbers = {k: v for k, v in data.items() if k not in ("message",)}
        return AuditEntry(at, "tripwire", pid, f"{data.get('tripwire')} ({data.get('phase')}): {data.get('message')}",
                          numbers)
    if kind == ev.RELEASE:
        note = f": {data['note']}" if data.get("note") else ""
        return AuditEntry(at, "release", pid, f"quarantine lifted by {data.get('by')}{note}", dict(data))
    if kind == ev.APPROVAL:
        decision = str(data.get("decision"))
        forced = " (forced: not promoted)" if data.get("forced") else ""
        note = f": {data['note']}" if data.get("note") else ""
        return AuditEntry(at, "approval" if decision == "approved" else "rejection", pid,
                          f"{decision} by {data.get('by')}{forced}{note}", dict(data))
    return None


def _run_entries(archive: RunArchive) -> list[AuditEntry]:
    info, stats, run_dir = archive.info, archive.run_stats, archive.run_dir
    entries = []
    for session in info.get("history") or []:
        for name in session.get("accepted_damage") or []:
            entries.append(AuditEntry(_epoch(session.get("started_at")), "damage", "",
                                      f"session {session.get('session')} accepted damaged file {name} "
                                      "(moved to damaged/)", {"file": name, "session": session.get("session")}))
    from evolve.damage import damaged_notes

    for note in damaged_notes(run_dir):
        entries.append(AuditEntry(_epoch(note.get("moved_at")), "damage", "",
                                  f"{note.get('moved_from')} ({note.get('kind')}: {note.get('reason')}) moved to "
                                  f"{note.get('moved_to')}", {k: note.get(k) for k in ("rows", "iterations",
                                                                                       "unknown_rows", "table")}))
    lost = info.get("lost") if isinstance(info.get("lost"), dict) else {}
    if lost.get("count"):
        entries.append(AuditEntry(_epoch(info.get("created_at")), "damage", "",
                                  f"{lost['count']} iteration(s) recorded as lost to damage",
                                  {"iterations": lost.get("iterations"), "unknown_rows": lost.get("unknown_rows")}))
    now = dt.datetime.now(dt.UTC).timestamp()
    for damage in archive.damage:
        entries.append(AuditEntry(now, "damage", "", f"not yet handled: {damage.describe()}", damage.to_dict()))
    reason = info.get("stop_reason") or stats.get("stop_reason")
    if reason:
        path = run_dir / "stats.json"
        at = os.path.getmtime(path) if path.is_file() else _epoch(info.get("created_at"))
        entries.append(AuditEntry(at, "stop", "", f"{reason}: {info.get('stop_message') or stats.get('stop_message')}",
                                  {"stop_reason": reason, "done": stats.get("done"), "budget": stats.get("budget"),
                                   "state": info.get("state")}))
    return entries


def _isolation_changes(archive: RunArchive) -> list[AuditEntry]:
    rows = archive.rows(
        """
        SELECT iteration, program_id, isolation, before, epoch(created_at) AS at FROM (
            SELECT iteration, program_id, isolation, created_at,
                   lag(isolation) OVER (ORDER BY iteration, program_id) AS before
            FROM (SELECT DISTINCT iteration, program_id, isolation, created_at FROM programs
                  WHERE coalesce(isolation, '') <> ''))
        WHERE before IS DISTINCT FROM isolation ORDER BY iteration
        """, full=True)
    entries = []
    for r in rows:
        first = r["before"] is None
        text = (f"candidates run under {r['isolation']}" if first else
                f"sandbox level changed from {r['before']} to {r['isolation']} at iteration {r['iteration']}")
        entries.append(AuditEntry(float(r["at"] or 0.0), "sandbox_level", str(r["program_id"]), text,
                                  {"iteration": r["iteration"], "isolation": r["isolation"], "before": r["before"]}))
    return entries


def steering_entries(run_dir: str | os.PathLike[str]) -> list[AuditEntry]:
    """Each action of the run's steering log (who pinned, banned or noted what, when, from where), and each damaged
    line of it as damage (the driver ignored it; it says so here too)."""
    from evolve.steering import read_state, steering_path

    path = steering_path(run_dir)
    if not path.is_file():
        return []
    state = read_state(run_dir)
    entries = []
    for action in state.actions:
        who = action.who or "someone unnamed"
        via = f" via {action.source}" if action.source else ""
        what = f"{action.action.value} by {who}{via}" + (f": {action.text}" if action.text else "")
        entries.append(AuditEntry(action.at, "steering", action.program_id, what,
                                  {k: v for k, v in action.to_json().items() if k != "at"}))
    at = os.path.getmtime(path)
    for bad in state.damaged:
        entries.append(AuditEntry(at, "damage", "", f"steering.jsonl line {bad.line} ignored: {bad.reason}",
                                  bad.to_json()))
    entries += [AuditEntry(at, "damage", "", f"steering.jsonl: {warning}", {}) for warning in state.warnings]
    return entries


def program_entries(archive: RunArchive, program_id: str) -> list[AuditEntry]:
    """The audit entries recorded in the run's events about one program, oldest first."""
    rows = run_events(archive, program_id=program_id)
    return [e for e in (_event_entry(row) for row in rows) if e is not None]


def audit(archive: RunArchive, sandbox_levels: bool = True) -> list[AuditEntry]:
    """Every entry of the run's audit trail, oldest first. ``sandbox_levels=False`` leaves out the sandbox level
    changes, the one part that reads every program row (a fraction of a second per million)."""
    entries = [e for e in (_event_entry(row) for row in run_events(archive)) if e is not None]
    entries += _run_entries(archive)
    entries += steering_entries(archive.run_dir)
    if sandbox_levels:
        entries += _isolation_changes(archive)
    return sorted(entries, key=lambda e: e.at)
