"""A run's strategies and scratchpad notes, read back from its archive: for ``evolve archive strategies`` and the
HTML report (``strategies_html``).

Strategies come from the events table (text, parent, the prompt and answer that made them, parameters kept and
dropped); their statistics are recomputed from the program rows (each child records its strategy under
``llm.search.strategy``) with the same credit rule and prior as the run (``evolve.search.strategies``), so the
figures are the archive's, not a cached copy.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from evolve.search.settings import StrategySettings
from evolve.search.strategies import base_rate, shrunk_fitness

_CHILDREN_SQL = """
WITH c AS (
    SELECT json_extract_string(llm, '$.search.strategy') AS sid, status, fitness, parent_ids[1] AS parent
    FROM programs WHERE iteration > 0 AND json_extract_string(llm, '$.search.strategy') IS NOT NULL
), p AS (SELECT program_id, max(fitness) AS fitness FROM programs GROUP BY program_id)
SELECT c.sid, count(*) AS children,
       count(*) FILTER (WHERE c.status = 'ok' AND c.fitness > p.fitness) AS improved,
       count(*) FILTER (WHERE c.status = 'ok') AS valid
FROM c LEFT JOIN p ON p.program_id = c.parent GROUP BY c.sid
"""


@dataclass
class StrategyRow:
    id: str
    parent: str | None
    iteration: int
    origin: str
    text: str
    active: bool
    children: int = 0
    valid: int = 0
    improved: int = 0
    fitness: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    model: str = ""
    prompt: str = ""
    answer: str = ""

    def to_dict(self, full: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not full:
            data.pop("prompt")
            data.pop("answer")
        return data


@dataclass
class Notes:
    iteration: int
    notes: str
    adopted: bool
    model: str = ""
    error: str = ""


@dataclass
class StrategyListing:
    strategies: list[StrategyRow]
    failed: list[dict[str, Any]]  # generations that gave no usable strategy (their calls were paid for)
    scratchpad: list[Notes]
    base: float

    def to_dict(self) -> dict[str, Any]:
        return {"base_rate": round(self.base, 4), "strategies": [s.to_dict() for s in self.strategies],
                "failed_generations": self.failed, "scratchpad": [asdict(n) for n in self.scratchpad]}


def strategy_listing(archive: Any) -> StrategyListing:
    """Every strategy of the run (seeds first, then by iteration) with its lineage and fitness, and every version
    of the scratchpad notes. ``archive`` is an ``evolve.query.RunArchive``."""
    events = archive.events(kinds=["strategy", "scratchpad"])
    strategies = [e["data"] for e in events if e["kind"] == "strategy"]
    adopted = [d for d in strategies if d.get("adopted", True) and d.get("text")]
    active: set[str] = set()
    if adopted:
        last = max(adopted, key=lambda d: (int(d.get("iteration", 0)), str(d.get("id"))))
        active = set(last.get("active_after") or [])
    counts: dict[str, tuple[int, int, int]] = {}
    if adopted:
        for sid, children, improved, valid in archive.tuples(_CHILDREN_SQL, full=True):
            counts[str(sid)] = (int(children), int(improved), int(valid))
    total = sum(c[0] for c in counts.values())
    base = base_rate(sum(c[1] for c in counts.values()), total)
    prior = _prior(archive)
    rows = []
    for d in sorted(adopted, key=lambda d: (int(d.get("iteration", 0)), str(d.get("id")))):
        sid = str(d["id"])
        children, improved, valid = counts.get(sid, (0, 0, 0))
        fitness = shrunk_fitness(improved, children, prior, base)
        rows.append(StrategyRow(id=sid, parent=d.get("parent"), iteration=int(d.get("iteration", 0)),
                                origin=str(d.get("origin", "llm")), text=str(d.get("text", "")), active=sid in active,
                                children=children, valid=valid, improved=improved, fitness=round(fitness, 4),
                                params=dict(d.get("params") or {}), ignored=list(d.get("ignored") or []),
                                model=str(d.get("model", "")), prompt=str(d.get("prompt", "")),
                                answer=str(d.get("answer", ""))))
    failed = [{"iteration": d.get("iteration"), "error": d.get("error", ""), "answer": d.get("answer", "")}
              for d in strategies if not (d.get("adopted", True) and d.get("text"))]
    notes = sorted((Notes(int(e["iteration"]), str(e["data"].get("notes", "")), bool(e["data"].get("adopted")),
                          str(e["data"].get("model", "")), str(e["data"].get("error") or ""))
                    for e in events if e["kind"] == "scratchpad"), key=lambda n: n.iteration)
    return StrategyListing(rows, failed, notes, base)


def _prior(archive: Any) -> float:
    info = getattr(archive, "info", None) or {}
    table = info.get("search") if isinstance(info.get("search"), dict) else {}
    strategies = table.get("strategies") if isinstance(table.get("strategies"), dict) else {}
    value = strategies.get("prior", StrategySettings.prior)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else StrategySettings.prior


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def strategies_html(archive: Any) -> str:
    """The report's section on the run's strategies and scratchpad notes ("" when the run has neither)."""
    listing = strategy_listing(archive)
    if not listing.strategies and not listing.scratchpad and not listing.failed:
        return ""
    parts = ['<h2 id="strategies">Search strategies</h2>']
    if listing.strategies:
        parts.append(f'<p class="muted">fitness: share of children that beat their parent, shrunk toward the run\'s '
                     f'rate ({listing.base:.3f}); active strategies in bold</p>')
        num = ' class="num"'
        head = "".join(f"<th{num if n else ''}>{h}</th>" for h, n in (
            ("strategy", 0), ("parent", 0), ("born at", 1), ("children", 1), ("beat parent", 1), ("fitness", 1),
            ("parameters", 0), ("text", 0)))
        body = []
        for s in sorted(listing.strategies, key=lambda s: -s.fitness):
            name = f"<b>{_e(s.id)}</b>" if s.active else _e(s.id)
            params = _e(json.dumps(s.params, sort_keys=True)) if s.params else ""
            dropped = f'<br><span class="muted">dropped: {_e("; ".join(s.ignored))}</span>' if s.ignored else ""
            body.append(f"<tr><td>{name}</td><td>{_e(s.parent or '')}</td><td class=\"num\">{s.iteration}</td>"
                        f"<td class=\"num\">{s.children}</td><td class=\"num\">{s.improved}</td>"
                        f"<td class=\"num\">{s.fitness:.3f}</td><td>{params}{dropped}</td>"
                        f"<td><details><summary>{_e(s.text[:90])}</summary><pre>{_e(s.text)}</pre>"
                        + (f"<p class=\"muted\">prompt that made it</p><pre>{_e(_prompt_text(s.prompt))}</pre>"
                           if s.prompt else "") + "</details></td></tr>")
        parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
    if listing.failed:
        parts.append(f'<p class="muted">{len(listing.failed)} generation(s) gave no usable strategy.</p>')
    parts.append('<h2 id="scratchpad">Scratchpad notes</h2>')
    if listing.scratchpad:
        for n in reversed(listing.scratchpad):
            state = "" if n.adopted else f' <span class="bad">(not adopted: {_e(n.error or "empty")})</span>'
            parts.append(f"<details{' open' if n is listing.scratchpad[-1] else ''}><summary>iteration {n.iteration}"
                         f"{state}</summary><pre>{_e(n.notes)}</pre></details>")
    else:
        parts.append('<p class="muted">no scratchpad notes</p>')
    return "\n".join(parts)


def _prompt_text(prompt: str) -> str:
    try:
        messages = json.loads(prompt)
        return "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in messages)
    except (ValueError, AttributeError, TypeError):
        return prompt
