"""What the UI shows of a run's oversight (standings, decisions, the audit trail) and of its co-evolved search
strategies and scratchpad notes. Pure functions of an open ``RunArchive``; ``evolve.ui.data.RunSource`` caches
their answers per version of the run.

Everything comes from the run's ``events`` table (small: a few events per checked program) and ``steering.jsonl``;
no program row is read per event. The one part of the audit trail that reads every program row, the sandbox level
changes, is left out on runs above ``SANDBOX_AUDIT_MAX_ROWS`` (the panel says so; ``evolve archive audit`` lists
them). Held-out figures are shown to people here; they never reach a prompt, and the UI is not one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evolve.oversight import events as ev
from evolve.oversight.audit import AuditEntry, audit, program_entries
from evolve.oversight.read import Decision, ProgramStanding, decisions, run_events, standings, standings_from
from evolve.oversight.standing import Standing

if TYPE_CHECKING:
    from evolve.query import RunArchive

STANDINGS = tuple(s.value for s in Standing)
SANDBOX_AUDIT_MAX_ROWS = 100_000
# The verdict's numbers a program page shows, in this order, when the standing event has them.
VERDICT_NUMBERS = (("visible", "visible score"), ("heldout", "held-out"), ("behind", "held-out behind visible by"),
                   ("allowance", "allowance"), ("reevaluated", "re-evaluations"), ("spread", "spread"),
                   ("reproduce_allowance", "re-evaluation allowance"), ("check", "check"),
                   ("tripwires", "tripwires"))


def standing_map(archive: RunArchive) -> dict[str, str]:
    """``program_id -> standing`` for every program oversight decided on (the others are candidates)."""
    return {pid: s.standing.value for pid, s in standings(archive).items()}


def standing_counts(known: dict[str, str], programs: int) -> dict[str, int]:
    counts = {s: 0 for s in STANDINGS}
    for value in known.values():
        counts[value] = counts.get(value, 0) + 1
    counts[Standing.CANDIDATE.value] = max(0, programs - sum(v for k, v in counts.items() if k != "candidate"))
    return counts


def standing_condition(known: dict[str, str], standing: str) -> tuple[str, list[str]] | None:
    """An SQL condition over ``program_id`` (and its parameters) keeping this standing's programs, as ``evolve
    archive top --standing`` does; None keeps every program."""
    if standing not in STANDINGS:
        return None
    if standing == Standing.CANDIDATE.value:
        others = [pid for pid, s in known.items() if s != standing]
        return (f"program_id NOT IN ({', '.join('?' * len(others))})", others) if others else None
    ids = [pid for pid, s in known.items() if s == standing]
    return (f"program_id IN ({', '.join('?' * len(ids))})", ids) if ids else ("FALSE", [])


def _entry(e: AuditEntry) -> dict[str, Any]:
    return {"at": e.at, "kind": e.kind, "program_id": e.program_id, "summary": e.summary, "numbers": e.numbers}


def audit_page(archive: RunArchive, rows: int, page: int, per_page: int, known: dict[str, str],
               made: dict[str, Decision]) -> dict[str, Any]:
    """The run's audit trail, most recent first, one page of it; and the standings (``standing_map``) and
    decisions (``evolve.oversight.read.decisions``) counted."""
    sandbox = rows <= SANDBOX_AUDIT_MAX_ROWS
    entries = audit(archive, sandbox_levels=sandbox)
    entries.reverse()
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    return {"total": len(entries), "page": page, "per_page": per_page, "kinds": kinds,
            "entries": [_entry(e) for e in entries[page * per_page:(page + 1) * per_page]],
            "sandbox_levels": sandbox, "standings": standing_counts(known, rows), "decided": len(known),
            "decisions": {d: sum(1 for x in made.values() if x.decision == d) for d in ("approved", "rejected")}}


def program_oversight(archive: RunArchive, program_id: str) -> dict[str, Any]:
    """A program's standing with the verdict's numbers, any person's decision, and its own audit entries."""
    found: ProgramStanding | None = standings_from(run_events(archive, [ev.STANDING], program_id)).get(program_id)
    numbers = found.numbers if found else {}
    made = decisions(archive, program_id).get(program_id)
    return {
        "standing": found.standing.value if found else Standing.CANDIDATE.value,
        "decided": found is not None, "reasons": list(found.reasons) if found else [],
        "numbers": [(label, numbers[key]) for key, label in VERDICT_NUMBERS if numbers.get(key) not in (None, [])],
        "decision": made.to_dict() if made else None, "decision_line": made.line() if made else "",
        "entries": [_entry(e) for e in reversed(program_entries(archive, program_id))],
    }


def strategies_view(archive: RunArchive, has_strategies: bool) -> dict[str, Any]:
    """The run's strategies (fittest first, without the prompts that made them) and scratchpad notes (latest
    first); empty lists when the run has none (``has_strategies``: the panel is then not shown)."""
    if not has_strategies:  # skip the children query entirely
        return {"strategies": [], "scratchpad": [], "failed": 0, "base_rate": None}
    from evolve.search.listing import strategy_listing

    listing = strategy_listing(archive)
    return {"strategies": [s.to_dict(full=False) for s in sorted(listing.strategies,
                                                                   key=lambda s: (-s.fitness, s.iteration))],
            "scratchpad": [{"iteration": n.iteration, "notes": n.notes, "adopted": n.adopted, "model": n.model,
                            "error": n.error} for n in reversed(listing.scratchpad)],
            "failed": len(listing.failed), "base_rate": round(listing.base, 4)}
