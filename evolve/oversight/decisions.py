"""People's decisions on a run's programs, appended as events: approve, reject, release a quarantine.

Each decision is signed off (who, when, a note) and names the program's code by its SHA-256, so a record can be
checked against the code it was about. Approving a program that is not promoted needs ``force`` and the record says
so. Recording takes the run's writer lock: a run being written by a live ``evolve run`` is refused (stop it or let it
finish, then record), and nothing else of the run is touched (journals left by a killed run stay for its resume).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.oversight import events as ev
from evolve.oversight.read import standing_of
from evolve.oversight.standing import Standing

APPROVED, REJECTED = "approved", "rejected"


class DecisionRefused(ValueError):
    """The decision cannot be recorded as asked; nothing was written."""


@dataclass(frozen=True)
class Recorded:
    program_id: str
    kind: str
    data: dict[str, Any]
    event_id: str


def code_sha256(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _write(run_dir: Path, run_id: str, events: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    from evolve.archive import ArchiveLockedError, ArchiveWriter

    try:
        writer = ArchiveWriter(run_dir, run_id, recover=False, reserve_bytes=0)
    except ArchiveLockedError as exc:
        raise DecisionRefused(f"{exc} (a running evolve run?); nothing was recorded: record the decision once the "
                              "run stops") from None
    ids = []
    try:
        for kind, program_id, data in events:
            ids.append(writer.record_event(kind, ev.payload(data), program_id=program_id,
                                           iteration=_iteration(run_dir)))
    finally:
        writer.close()
    return ids


def _iteration(run_dir: Path) -> int:
    from evolve.run_info import read_info_quietly

    value = read_info_quietly(run_dir).get("next_iteration")
    return max(0, int(value) - 1) if isinstance(value, int) else 0


def decide(run_dir: str | Path, program_id: str, decision: str, by: str, note: str = "",
           force: bool = False) -> Recorded:
    """Record ``approved`` or ``rejected`` for a program (``program_id`` may be a unique prefix)."""
    from evolve.query import RunArchive

    if decision not in (APPROVED, REJECTED):
        raise ValueError(f"decision must be {APPROVED!r} or {REJECTED!r}")
    if not by.strip():
        raise DecisionRefused("a decision must be signed: --by NAME")
    with RunArchive(run_dir) as archive:
        record = archive.program(program_id)
        standing = standing_of(archive, record.program_id).standing
        run_dir, run_id = archive.run_dir, archive.run_id
    if not record.code:
        raise DecisionRefused(f"program {record.program_id} has no code (status {record.status}): nothing to "
                              "approve or reject")
    forced = decision == APPROVED and standing is not Standing.PROMOTED
    if forced and not force:
        raise DecisionRefused(f"program {record.program_id} is {standing.value}, not promoted: approving it needs "
                              "--force, and the record will say it was forced")
    data = {"decision": decision, "by": by.strip(), "note": note, "code_sha256": code_sha256(record.code),
            "standing": standing.value, "forced": forced, "score": record.score, "at": time.time()}
    (event_id,) = _write(run_dir, run_id, [(ev.APPROVAL, record.program_id, data)])
    return Recorded(record.program_id, ev.APPROVAL, data, event_id)


def release(run_dir: str | Path, program_id: str, by: str, note: str = "") -> Recorded:
    """Lift a program's quarantine: it may be a parent again and is checked like any program, and the tripwires
    that caught it do not catch it again."""
    from evolve.query import RunArchive

    if not by.strip():
        raise DecisionRefused("a release must be signed: --by NAME")
    with RunArchive(run_dir) as archive:
        record = archive.program(program_id)
        current = standing_of(archive, record.program_id)
        run_dir, run_id = archive.run_dir, archive.run_id
    if current.standing is not Standing.QUARANTINED:
        raise DecisionRefused(f"program {record.program_id} is {current.standing.value}, not quarantined: nothing to "
                              "release")
    data = {"by": by.strip(), "note": note, "code_sha256": code_sha256(record.code), "at": time.time()}
    standing = {"standing": Standing.CANDIDATE.value, "previous": Standing.QUARANTINED.value, "check": None,
                "released": True, "reasons": [f"quarantine lifted by {by.strip()}" + (f": {note}" if note else "")],
                "fitness": record.fitness, "score": record.score, "iteration": record.iteration}
    ids = _write(run_dir, run_id, [(ev.RELEASE, record.program_id, data), (ev.STANDING, record.program_id, standing)])
    return Recorded(record.program_id, ev.RELEASE, data, ids[0])
