"""Reading a run's oversight: standings, the best promoted program, people's decisions.

Everything here comes from the run's ``events`` table (``RunArchive.events``). "Best" means best *promoted*: a
program whose held-out figure agreed with its visible score and whose score reproduced. Runs recorded before
oversight existed have no standing events; for them the commands fall back to every program, said as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evolve.oversight import events as ev
from evolve.oversight.standing import Standing

if TYPE_CHECKING:
    from evolve.query import RunArchive

STANDING_CHOICES = ("promoted", "candidate", "overfit", "flaky", "quarantined", "all")


@dataclass(frozen=True)
class ProgramStanding:
    """A program's standing (the latest standing event about it) and why."""

    program_id: str
    standing: Standing
    reasons: tuple[str, ...] = ()
    at: Any = None  # when it was decided
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"program_id": self.program_id, "standing": self.standing.value, "reasons": list(self.reasons),
                "at": _iso(self.at), **self.numbers}


@dataclass(frozen=True)
class Decision:
    """A person's latest decision on a program."""

    program_id: str
    decision: str  # approved / rejected
    by: str
    note: str
    at: Any
    code_sha256: str
    standing: str  # the program's standing when decided
    forced: bool

    def to_dict(self) -> dict[str, Any]:
        return {"program_id": self.program_id, "decision": self.decision, "by": self.by, "note": self.note,
                "at": _iso(self.at), "code_sha256": self.code_sha256, "standing": self.standing,
                "forced": self.forced}

    def line(self) -> str:
        forced = " (forced: not promoted when approved)" if self.forced else ""
        note = f": {self.note}" if self.note else ""
        return f"{self.decision} by {self.by} at {_iso(self.at)}{forced}{note} [code sha256 {self.code_sha256[:16]}]"


def _iso(at: Any) -> Any:
    return at.isoformat() if hasattr(at, "isoformat") else at


def run_events(archive: RunArchive, kinds: Sequence[str] | None = None,
               program_id: str | None = None) -> list[dict[str, Any]]:
    """The run's events of these kinds (all by default), in recorded order, ``data`` decoded."""
    return ev.event_rows(archive.events(kinds=list(kinds) if kinds else None, program_id=program_id))


def standings(archive: RunArchive) -> dict[str, ProgramStanding]:
    """Every program oversight decided on; programs not listed are candidates."""
    return standings_from(run_events(archive, [ev.STANDING]))


def standing_of(archive: RunArchive, program_id: str) -> ProgramStanding:
    rows = run_events(archive, [ev.STANDING], program_id=program_id)
    if not rows:
        return ProgramStanding(program_id, Standing.CANDIDATE)
    return standings_from(rows)[program_id]


def standings_from(rows: list[dict[str, Any]]) -> dict[str, ProgramStanding]:
    out: dict[str, ProgramStanding] = {}
    for row in rows:
        data = row["data"]
        if not row.get("program_id"):
            continue
        out[row["program_id"]] = ProgramStanding(row["program_id"], Standing(data.get("standing", "candidate")),
                                                 tuple(data.get("reasons") or ()), row.get("created_at"),
                                                 {k: v for k, v in data.items() if k not in ("standing", "reasons")})
    return out


def decisions(archive: RunArchive, program_id: str | None = None) -> dict[str, Decision]:
    """Each program's latest approval or rejection."""
    out: dict[str, Decision] = {}
    for row in run_events(archive, [ev.APPROVAL], program_id=program_id):
        data, pid = row["data"], row.get("program_id")
        if pid:
            out[pid] = Decision(pid, str(data.get("decision", "")), str(data.get("by", "")),
                                str(data.get("note", "")), row.get("created_at"), str(data.get("code_sha256", "")),
                                str(data.get("standing", "")), bool(data.get("forced")))
    return out


def _in_list(ids: Sequence[str]) -> str:
    if not ids:
        return "FALSE"
    return "program_id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in sorted(ids)) + ")"


def standing_where(known: dict[str, ProgramStanding], standing: str) -> str | None:
    """An SQL condition over ``program_id`` keeping programs of this standing (None: every program)."""
    if standing == "all":
        return None
    if standing == Standing.CANDIDATE.value:
        others = [pid for pid, s in known.items() if s.standing is not Standing.CANDIDATE]
        return f"NOT ({_in_list(others)})" if others else None
    return _in_list([pid for pid, s in known.items() if s.standing.value == standing])


def approved_where(archive: RunArchive) -> str:
    """An SQL condition keeping the programs whose latest decision is an approval (``export --approved``)."""
    return _in_list([pid for pid, d in decisions(archive).items() if d.decision == "approved"])


@dataclass(frozen=True)
class TopAnswer:
    rows: list[dict[str, Any]]  # archive.top rows plus "standing" and "decision"
    standing: str  # the filter applied
    note: str = ""  # said when the default could not apply (a run without standings)


def top_rows(archive: RunArchive, n: int = 10, standing: str | None = None, island: int | None = None,
             where: str | None = None) -> TopAnswer:
    """The best programs of one standing (default: promoted, the run's "best"), each with its standing and any
    decision. A run without standing events (recorded before oversight) lists every program instead."""
    known = standings(archive)
    note = ""
    if standing is None:
        standing = "promoted"
        if not known:
            standing, note = "all", "no standings recorded in this run (older than oversight): every program shown"
    condition = standing_where(known, standing)
    combined = " AND ".join(f"({c})" for c in (condition, where) if c) or None
    rows = archive.top(n, island=island, where=combined)
    made = decisions(archive)
    for row in rows:
        pid = row["program_id"]
        row["standing"] = (known[pid].standing if pid in known else Standing.CANDIDATE).value
        row["decision"] = made[pid].decision if pid in made else ""
    return TopAnswer(rows, standing, note)


def best_promoted(archive: RunArchive) -> dict[str, Any] | None:
    """The best promoted program's summary row (``RunArchive.top`` columns), or None."""
    answer = top_rows(archive, 1, "promoted")
    return answer.rows[0] if answer.rows else None


def best_row(archive: RunArchive) -> dict[str, Any] | None:
    """The run's best as every report means it: the best promoted program; for a run recorded before oversight
    (no standings), the fittest program. What ``RunArchive.best`` should answer."""
    answer = top_rows(archive, 1)
    return answer.rows[0] if answer.rows else None


def decision_lines(archive: RunArchive, program_id: str) -> list[str]:
    """What ``evolve archive show`` prints about a program's standing and any decision on it."""
    full = archive.resolve_id(program_id)
    lines = []
    s = standing_of(archive, full)
    why = f" ({'; '.join(s.reasons)})" if s.reasons else ""
    lines.append(f"standing: {s.standing.value}{why}")
    made = decisions(archive, full).get(full)
    if made is not None:
        lines.append(f"decision: {made.line()}")
    return lines
