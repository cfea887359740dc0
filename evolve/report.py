"""A self-contained HTML report of a run: one file with its plots, best programs, diffs, lineage, settings, costs.

Everything is inline (PNG plots as data URIs, CSS, syntax colours as inline styles), so the file can be mailed or
attached to an issue and opened anywhere offline. Every text that comes from the archive is HTML-escaped: programs
and artifacts are untrusted. The only script counts the plots the browser decoded (``data-images-decoded`` on
``<body>``), which lets a headless browser test check that the page rendered.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, get_lexer_by_name
from pygments.util import ClassNotFound

from evolve.archive import PROBLEM_SNAPSHOT
from evolve.cli_archive import unified_diff
from evolve.failures import summarise_failures
from evolve.plots import figures, png_bytes
from evolve.query import RunArchive
from evolve.query_model import same_score
from evolve.query_stats import describe_improvement
from evolve.search.listing import strategies_html
from evolve.ui.pictures import picture_for

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 70rem;
       padding: 0 1rem; color: #212121; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0; } td, th { padding: 0.2rem 0.7rem; text-align: left;
       border-bottom: 1px solid #eee; vertical-align: top; } th { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #757575; } .good { color: #2e7d32; } .bad { color: #c62828; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(28rem, 1fr)); gap: 0.5rem; }
.plots figure { margin: 0; } .plots img { max-width: 100%; border: 1px solid #eee; }
.program { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; margin: 1rem 0; }
.picture img { max-width: 28rem; border: 1px solid #eee; }
pre, .highlight pre { overflow-x: auto; font-size: 0.82rem; line-height: 1.35; background: #f8f8f8;
       padding: 0.6rem; border-radius: 4px; }
details summary { cursor: pointer; margin: 0.4rem 0; } code { font-size: 0.9em; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var images = document.querySelectorAll('img[data-plot]');
  var decoded = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { decoded += 1; } });
  document.body.setAttribute('data-images-decoded', String(decoded));
  document.body.setAttribute('data-images-total', String(images.length));
});
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: float | None, spec: str = ".8g") -> str:
    return "-" if value is None else format(value, spec)


def _code_html(code: str, language: str) -> str:
    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        lexer = get_lexer_by_name("text")
    return highlight(code, lexer, HtmlFormatter(noclasses=True, nowrap=False))


def _diff_html(text: str) -> str:
    if not text:
        return '<p class="muted">identical code</p>'
    return highlight(text, DiffLexer(), HtmlFormatter(noclasses=True))


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{cell}</td>' for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(items: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in items) + "</table>"


def _overview(summary: dict[str, Any]) -> str:
    best, seed = summary["best"], summary["seed"]
    items = [
        ("problem", _e(summary["problem"])),
        ("run", _e(summary["run_id"])),
        ("state", _e(summary["state"] or "-")),
        ("created", _e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary["created_at"])))
         if isinstance(summary["created_at"], int | float) else "-"),
        ("score", _e(f"{summary['score_metric']} ({summary['direction']})")),
        ("programs", _e(summary["programs"])),
        ("evaluated", _e(summary["evaluated"])),
        ("failure rate", _e(f"{summary['failure_rate']:.1%}")),
        ("best score", f'<span id="best-score">{_e(_num(best["score"]) if best else "-")}</span>'
         + (f' <code id="best-program">{_e(best["program_id"])}</code>' if best else "")),
        ("seed score", _e(_num(seed["score"]) if seed else "-")),
        ("improvement", f'<span id="improvement">{_e(describe_improvement(summary))}</span>'),
        ("mean evaluation", _e(f"{_num(summary['mean_eval_seconds'], '.3f')} s")),
        ("coverage", _e(", ".join(f"island {i}: {c:.0%}" for i, c in summary["coverage"].items()))),
        ("isolation", _e(", ".join(f"{k} ({v})" for k, v in summary["isolation"].items()) or "-")),
    ]
    if summary["in_process"]:
        items.append(("in-process evaluations", _e(summary["in_process"])))
    return _pairs(items)


def _costs(summary: dict[str, Any]) -> str:
    loop = summary["loop"] if isinstance(summary["loop"], dict) else {}
    mutator = loop.get("mutator", {}) if isinstance(loop.get("mutator"), dict) else {}
    totals = mutator.get("totals", {}) if isinstance(mutator.get("totals"), dict) else {}
    llm = summary["llm"]
    items = [
        ("LLM answers archived", _e(llm["answers"])),
        ("tokens", _e(totals.get("tokens", llm["tokens"]))),
        ("cost (USD)", _e(f"{float(totals.get('cost', llm['cost'])):.4f}")),
    ]
    for key in ("calls", "failed_calls", "retries", "prompt_tokens", "completion_tokens", "unusable_rate",
                "mean_latency"):
        if key in totals:
            items.append((key.replace("_", " "), _e(totals[key])))
    if loop:
        items.append(("last session", _e(f"stopped by {loop.get('stop_reason') or '-'}; "
                                         f"{_num(loop.get('elapsed_seconds_this_session'), '.1f')} s")))
    rows = [[_e(m["mutator"]), _e(m["children"]), _e(m["ok"]), _e(m["improved"])] for m in summary["mutators"]]
    return _pairs(items) + _table(["mutator", "children", "ok", "improved on parent"], rows, {1, 2, 3})


def _plots(archive: RunArchive) -> str:
    parts = []
    for name, fig in figures(archive).items():
        data = base64.b64encode(png_bytes(fig, dpi=90)).decode("ascii")
        parts.append(f'<figure><img data-plot="{_e(name)}" alt="{_e(name)}" src="data:image/png;base64,{data}">'
                     f'<figcaption class="muted">{_e(name.replace("_", " "))}</figcaption></figure>')
    return '<div class="plots">' + "".join(parts) + "</div>"


def _program(archive: RunArchive, rank: int, row: dict[str, Any]) -> str:
    record = archive.program(row["program_id"])
    language = archive.problem.language
    metrics = ", ".join(f"{_e(k)} = {_e(_num(v, '.6g'))}" for k, v in sorted(record.metrics.items()))
    parts = [
        f'<div class="program" id="program-{_e(record.program_id)}">',
        f"<h3>#{rank} <code>{_e(record.program_id)}</code> score {_e(_num(record.score))}</h3>",
        f'<p class="muted">island {record.island}, iteration {record.iteration}, generation {record.generation}, '
        f"mutator {_e(record.mutator)}, parent <code>{_e(record.parent_id or 'none (seed)')}</code></p>",
        f"<p>{metrics}</p>",
    ]
    picture = picture_for(archive.run_dir, archive.info, record)  # the problem's renderer; sanitised SVG
    if picture.svg:
        parts.append(f'<figure class="picture"><img data-picture alt="picture of {_e(record.program_id)}" '
                     f'src="{picture.data_uri()}"></figure>')
    elif picture.error:
        parts.append(f'<p class="bad">{_e(picture.error)}</p>')
    parts.append("<details open><summary>code</summary>" + _code_html(record.code, language) + "</details>")
    if record.parent_id:
        try:
            parent = archive.program(record.parent_id)
            text = unified_diff(parent.code, record.code, f"parent {parent.program_id}", f"{record.program_id}")
            parts.append(f"<details open><summary>diff to parent (score {_e(_num(parent.score))})</summary>"
                         + _diff_html(text) + "</details>")
        except LookupError:
            parts.append('<p class="bad">parent not in the archive</p>')
    parts.append("</div>")
    return "".join(parts)


def _lineage(archive: RunArchive, program_id: str) -> str:
    steps = list(reversed(archive.lineage(program_id)))
    rows = []
    previous: float | None = None
    for s in steps:
        change = ""
        if s.score is not None and previous is not None and not same_score(s.score, previous):
            better = (s.score - previous) * archive.problem.sign > 0
            change = f'<span class="{"good" if better else "bad"}">{s.score - previous:+.4g}</span>'
        rows.append([str(s.generation), f"<code>{_e(s.program_id)}</code>", str(s.iteration), _e(s.mutator or "-"),
                     _e(s.status), _e(_num(s.score)), change])
        if s.score is not None:
            previous = s.score
    return _table(["generation", "program", "iteration", "mutator", "status", "score", "change"], rows,
                  {0, 2, 5, 6})


def _failures(archive: RunArchive, top: int = 3) -> str:
    """The most frequent failure reasons (status and normalised message), each with an example program."""
    found = summarise_failures(archive)
    if not found.failed:
        return '<p class="muted">no program failed</p>'
    rows = [[_e(g.count), _e(f"{g.count / found.failed:.0%}"), _e(g.status), _e(g.reason),
             f"<code>{_e(g.example_id)}</code>"] for g in found.top(top)]
    more = len(found.groups) - top
    note = (f'<p class="muted">{found.failed} of {found.programs} programs failed, in {len(found.groups)} group(s)'
            + (f"; {more} more: <code>evolve archive failures {_e(archive.run_dir)}</code>" if more > 0 else "")
            + "</p>")
    return note + _table(["programs", "of failed", "status", "reason", "example"], rows, {0, 1})


def _settings(archive: RunArchive) -> str:
    settings = archive.info.get("settings", {})
    rows = [(k, f"<code>{_e(json.dumps(v))}</code>") for k, v in sorted(settings.items())]
    out = _pairs(rows) if rows else '<p class="muted">no settings recorded</p>'
    snapshot = archive.run_dir / PROBLEM_SNAPSHOT
    if snapshot.is_file():
        out += ("<details><summary>problem definition (problem.toml)</summary>"
                + _code_html(snapshot.read_text(encoding="utf-8"), "toml") + "</details>")
    return out


def build_report(archive: RunArchive, top: int = 5) -> str:
    """The report as one HTML string."""
    summary = archive.summary()
    best = summary["best"]
    title = f"evolve report: {summary['problem']} / {summary['run_id']}"
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(archive.run_dir)} · generated {_e(time.strftime("%Y-%m-%d %H:%M:%S"))}</p>',
        '<h2 id="overview">Overview</h2>', _overview(summary),
        '<h2 id="plots">Plots</h2>', _plots(archive),
        f'<h2 id="top">Top {top} programs</h2>',
    ]
    leaders = archive.top(top)
    sections += [_program(archive, rank, row) for rank, row in enumerate(leaders, 1)] or [
        '<p class="muted">no scored program</p>']
    sections.append('<h2 id="lineage">Lineage of the best program</h2>')
    sections.append(_lineage(archive, best["program_id"]) if best else '<p class="muted">no scored program</p>')
    from evolve.oversight.html import oversight_html  # standings, best promoted, decisions, audit trail
    sections += ['<h2 id="oversight">Oversight</h2>', oversight_html(archive)]
    sections += ['<h2 id="outcomes">Outcomes</h2>',
                 _table(["status", "programs"], [[_e(k), _e(v)] for k, v in summary["statuses"].items()], {1})]
    sections += ['<h2 id="failures">Top failure reasons</h2>', _failures(archive)]
    sections += ['<h2 id="costs">Costs</h2>', _costs(summary)]
    sections.append(strategies_html(archive))  # strategies and scratchpad notes; "" for a run without them
    sections += ['<h2 id="settings">Settings</h2>', _settings(archive)]
    if summary["bad_files"]:
        sections.append('<h2 id="warnings">Warnings</h2><ul>' + "".join(
            f"<li>skipped unreadable segment <code>{_e(p)}</code></li>" for p in summary["bad_files"]) + "</ul>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def write_report(archive: RunArchive | str | Path, out_path: str | Path, top: int = 5) -> Path:
    """Write the report of ``archive`` (a ``RunArchive`` or a run folder) to ``out_path``."""
    owned = not isinstance(archive, RunArchive)
    run = RunArchive(archive) if owned else archive
    try:
        text = build_report(run, top=top)
    finally:
        if owned:
            run.close()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text, encoding="utf-8")
    return out_path
