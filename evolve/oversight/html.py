"""The HTML report's "Oversight" section: standings, the best promoted program, decisions and the audit trail.

Every text from the archive is escaped (programs, notes and messages are untrusted)."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from evolve.oversight.audit import audit
from evolve.oversight.read import best_promoted, decisions, standings

if TYPE_CHECKING:
    from evolve.query import RunArchive


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def oversight_html(archive: RunArchive) -> str:
    """The section's body (the caller adds the ``<h2>``)."""
    known = standings(archive)
    counts: dict[str, int] = {}
    for s in known.values():
        counts[s.standing.value] = counts.get(s.standing.value, 0) + 1
    best = best_promoted(archive)
    parts = ['<div id="oversight-section">']
    if best is not None:
        parts.append(f'<p>best promoted: <code id="best-promoted">{_e(best["program_id"])}</code> score '
                     f'{_e(best["score"])}</p>')
    else:
        parts.append('<p class="muted">no program promoted yet: no score of this run has been checked on held-out '
                     "data</p>")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none decided"
    parts.append(f"<p>standings: {_e(summary)} (every other program is a candidate: never checked)</p>")
    made = decisions(archive)
    if made:
        parts.append("<h3>Decisions</h3>" + _table(
            ["program", "decision", "by", "when", "note", "standing then", "code sha256"],
            [[f"<code>{_e(d.program_id)}</code>", _e(d.decision + (" (forced)" if d.forced else "")), _e(d.by),
              _e(d.to_dict()["at"]), _e(d.note), _e(d.standing), f"<code>{_e(d.code_sha256[:16])}</code>"]
             for d in made.values()]))
    entries = audit(archive)
    parts.append("<h3>Audit trail</h3>")
    if entries:
        parts.append(_table(["when (UTC)", "what", "program", "summary", "numbers"],
                            [[_e(e.to_dict()["at"]), _e(e.kind), f"<code>{_e(e.program_id or '-')}</code>",
                              _e(e.summary), f"<code>{_e(json.dumps(e.numbers, default=str)[:400])}</code>"]
                             for e in entries]))
    else:
        parts.append('<p class="muted">nothing recorded</p>')
    parts.append("</div>")
    return "".join(parts)
