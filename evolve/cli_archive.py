"""``evolve archive``: what a run found, from the command line.

Every subcommand takes a run folder (``archive/<problem>/<run-id>``; a problem folder ``archive/<problem>`` means its
newest run) and answers with one DuckDB query over the Parquet segments (see ``evolve.query``). Each has ``--json``
for scripts: the JSON goes to stdout alone, warnings (an unreadable segment, named with the reason and what it held)
to stderr. Statistics and verification live in ``evolve.cli_archive_stats``; exports, plots and the report in
``evolve.cli_archive_export``.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from evolve.cli_archive_common import (
    SUMMARY_WHERE_COLUMNS,
    check_island,
    check_where,
    echo_json,
    fmt,
    friendly,
    make_console,
    open_run,
    when,
)
from evolve.cli_archive_export import export, plot, report, write_table
from evolve.cli_archive_stats import stats, verify
from evolve.oversight.read import STANDING_CHOICES

if TYPE_CHECKING:  # the query layer (DuckDB, pyarrow) loads only when an archive command runs
    from evolve.query import GridMap, RunArchive

__all__ = ["archive", "project", "unified_diff", "write_table"]


def _record_json(archive: RunArchive, program_id: str) -> dict[str, Any]:
    record = archive.program(program_id)
    data = {name: getattr(record, name) for name in record.__dataclass_fields__}
    data["parent_ids"] = list(record.parent_ids)
    data["created_at"] = record.created_at
    with contextlib.suppress(ValueError):  # not JSON: keep the text
        data["prompt"] = json.loads(record.prompt) if record.prompt else []
    return data


@click.group()
def archive() -> None:
    """Inspect runs: list them, rank and show programs, lineages, diffs, MAP-Elites maps, statistics, exports,
    plots and an HTML report."""


# ---------------------------------------------------------------------------------------------------------------
# ls


@archive.command("ls")
@click.argument("root", default="archive", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list.")
@friendly
def ls_command(root: str, as_json: bool) -> None:
    """Runs under ROOT (default ./archive; or one problem folder, or one run) with problem, size, best score and
    date. The run folder is always shown whole: on a narrow terminal other columns are left out first."""
    from evolve.query import ArchiveRoot

    if not Path(root).exists():
        raise click.ClickException(f"{root}: no such folder")
    scan = ArchiveRoot.scan(root)
    listings = []
    for run_dir in scan.runs:
        with open_run(str(run_dir), verify=False) as archive_:
            listings.append(archive_.listing())
    listings.sort(key=lambda r: (r.problem, r.created_at or 0.0, r.run_id))
    if as_json:
        echo_json([r.to_dict() for r in listings])
        return
    if not listings:
        click.echo(f"no runs under {root}")
        return
    rows = [{"problem": r.problem, "run": r.run_id, "programs": f"{r.programs:,}", "best score": fmt(r.best_score),
             "created": when(r.created_at), "state": r.state, "mutator": r.mutator, "folder": str(r.run_dir)}
            for r in listings]
    # A terminal's width (or $COLUMNS); a pipe gets every column, since nothing wraps there.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() or "COLUMNS" in os.environ else None
    for line in layout_columns(rows, LS_COLUMNS, width):
        click.echo(line)


# Columns of `archive ls`, most important first; "folder" (what a user copies) is never cut or dropped.
LS_COLUMNS = ("folder", "problem", "best score", "programs", "state", "run", "created", "mutator")
_LS_ORDER = ("problem", "run", "programs", "best score", "created", "state", "mutator", "folder")
_RIGHT = {"programs", "best score"}


def layout_columns(rows: list[dict[str, str]], priority: tuple[str, ...], width: int | None) -> list[str]:
    """Aligned text lines (header first). When ``width`` is too narrow, the least important columns are dropped,
    never cut; the first column of ``priority`` always stays whole, even if the line then wraps."""
    kept = list(priority)

    def widths(columns: list[str]) -> dict[str, int]:
        return {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}

    def total(columns: list[str]) -> int:
        return sum(widths(columns).values()) + 2 * (len(columns) - 1)

    while width is not None and len(kept) > 1 and total(kept) > width:
        kept.pop()
    columns = [c for c in _LS_ORDER if c in kept] if set(kept) <= set(_LS_ORDER) else kept
    sizes = widths(columns)

    def line(values: dict[str, str]) -> str:
        cells = [values[c].rjust(sizes[c]) if c in _RIGHT else values[c].ljust(sizes[c]) for c in columns]
        return "  ".join(cells).rstrip()

    return [line({c: c for c in columns}), *(line(r) for r in rows)]


# ---------------------------------------------------------------------------------------------------------------
# top


@archive.command()
@click.argument("run_dir")
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Programs to show.")
@click.option("--island", type=click.IntRange(min=0), help="Only programs bred on this island.")
@click.option("--where", help=f"SQL condition over the columns {', '.join(SUMMARY_WHERE_COLUMNS)}; e.g. "
              "\"mutator LIKE 'llm:%'\" or \"iteration > 100\".")
@click.option("--standing", type=click.Choice(STANDING_CHOICES), help="Only programs of this standing (default: "
              "promoted, the run's trusted best; 'all' for every program).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@friendly
def top(run_dir: str, limit: int, island: int | None, where: str | None, standing: str | None,
        as_json: bool) -> None:
    """Best programs of RUN_DIR with score, standing, status, island and iteration (scored programs only: status
    ok; by default only promoted ones, the run's trusted best).

    An unknown island or an invalid --where is an error (exit status 1); a valid question with no answer prints
    why on stderr (exit status 0, and `[]` with --json)."""
    from evolve.oversight.read import top_rows

    with open_run(run_dir) as archive_:
        check_island(archive_, island)
        matching = check_where(archive_, where, "summary", "--where") if where else None
        answer = top_rows(archive_, limit, standing, island=island, where=where)
    rows = answer.rows
    if answer.note:
        click.echo(f"note: {answer.note}", err=True)
    if not rows:
        click.echo(_why_empty(island, where, matching, answer.standing), err=True)
    if as_json:
        echo_json([{k: v for k, v in r.items() if k != "fitness"} for r in rows])
        return
    if not rows:
        return
    click.echo(f"{'rank':>4}  {'program':16}  {'score':>14}  {'standing':11}  {'status':8}  {'island':>6}  "
               f"{'iter':>6}  mutator")
    for rank, r in enumerate(rows, 1):
        click.echo(f"{rank:>4}  {r['program_id']:16}  {fmt(r['score']):>14}  {r['standing']:11}  {r['status']:8}  "
                   f"{r['island']:>6}  {r['iteration']:>6}  {r['mutator']}")


def _why_empty(island: int | None, where: str | None, matching: int | None, standing: str = "all") -> str:
    place = f" on island {island}" if island is not None else ""
    if standing != "all":
        place += f" with standing {standing} (--standing all lists every scored program)"
    if where and not matching:
        return f"no program{place} matches --where {where!r}"
    if where:
        return (f"{matching} program(s) match --where {where!r}, none of them scored{place}: top ranks scored "
                f"programs (status ok); `evolve archive export RUN -o FILE.jsonl --where ...` lists every program")
    return f"no scored program{place} yet"


# ---------------------------------------------------------------------------------------------------------------
# show


def _print_code(code: str, language: str) -> None:
    console = make_console()
    if console.is_terminal:
        from rich.syntax import Syntax

        console.print(Syntax(code, _lexer(language), line_numbers=True, word_wrap=False))
    else:
        click.echo(code)


def _lexer(language: str) -> str:
    return {"cuda": "cuda", "python": "python", "c": "c", "cpp": "cpp", "rust": "rust"}.get(language, "text")


def _section(title: str) -> None:
    click.echo(f"--- {title} ---")


def _prompt_messages(prompt: str) -> list[dict[str, str]] | None:
    if not prompt:
        return None
    try:
        data = json.loads(prompt)
    except ValueError:
        return [{"role": "prompt", "content": prompt}]
    if isinstance(data, list):
        return [{"role": str(m.get("role", "?")), "content": str(m.get("content", ""))}
                for m in data if isinstance(m, dict)]
    return [{"role": "prompt", "content": prompt}]


@archive.command()
@click.argument("run_dir")
@click.argument("program_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record, JSON columns decoded.")
@click.option("--no-code", is_flag=True, help="Leave out the code.")
@click.option("--prompt/--no-prompt", "with_prompt", default=True, show_default=True,
              help="Show the LLM prompt, when the program has one.")
@friendly
def show(run_dir: str, program_id: str, as_json: bool, no_code: bool, with_prompt: bool) -> None:
    """Metrics, stage outcomes, artifacts, code, edit and LLM exchange of one program (a unique id prefix will do)."""
    with open_run(run_dir) as archive_:
        if as_json:
            echo_json(_record_json(archive_, program_id))
            return
        r = archive_.program(program_id)
        language = archive_.problem.language
        from evolve.oversight.read import decision_lines

        oversight = decision_lines(archive_, r.program_id)  # its standing, and a person's decision if any
    click.echo(f"program {r.program_id}  status {r.status}  score {r.score}  island {r.island}  "
               f"iteration {r.iteration}  mutator {r.mutator}")
    for line in oversight:
        click.echo(line)
    click.echo(f"parent: {r.parent_id or '(none: seed)'}")
    if len(r.parent_ids) > 1:
        click.echo(f"inspirations: {', '.join(r.parent_ids[1:])}")
    click.echo(f"generation {r.generation}  fitness {r.fitness}  cell {r.cell}  created {when(r.created_at)}  "
               f"mutate {r.mutate_seconds:.3f} s  evaluate {r.eval_seconds:.3f} s")
    click.echo(f"metrics: {json.dumps(r.metrics, sort_keys=True)}")
    if r.features:
        click.echo(f"features: {json.dumps(r.features, sort_keys=True)}")
    click.echo(f"isolation: {r.isolation or '-'}{'  (evaluator ran in the candidate process)' if r.in_process else ''}")
    said: set[str] = set()  # the loop copies a failure's message to the stage, the artifacts and the edit error
    if r.edit_error:
        click.echo(f"edit rejected: {r.edit_error}")
        said.add(r.edit_error.strip())
    if r.stages:
        _section("stages")
        for s in r.stages:
            metrics = ", ".join(f"{k}={fmt(v, '.6g')}" for k, v in sorted(s.get("metrics", {}).items()))
            message = str(s.get("message") or "").strip()
            click.echo(f"[{s.get('stage')}] {s.get('status')}  {float(s.get('seconds', 0.0)):.3f} s"
                       f"{'  ' + metrics if metrics else ''}{'  ' + message if message not in said else ''}")
            said.add(message)
    if r.llm:
        _section("llm")
        keys = ("model", "mode", "prompt_tokens", "completion_tokens", "tokens", "cost", "latency", "attempts")
        click.echo("  ".join(f"{k}={r.llm[k]}" for k in keys if k in r.llm))
    if r.code and not no_code:
        _section("code")
        _print_code(r.code, language)
    if r.edit:
        _section("edit")
        click.echo(r.edit)
    messages = _prompt_messages(r.prompt) if with_prompt else None
    for m in messages or []:
        _section(f"prompt: {m['role']}")
        click.echo(m["content"])
    for name, text in r.artifacts.items():
        if text.strip() in said:
            continue
        _section(name)
        click.echo(text)


# ---------------------------------------------------------------------------------------------------------------
# lineage


@archive.command()
@click.argument("run_dir")
@click.argument("program_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the steps (seed first) as a JSON list.")
@friendly
def lineage(run_dir: str, program_id: str | None, as_json: bool) -> None:
    """Ancestors of PROGRAM_ID (default: the best program), from the seed down, with the score at each step."""
    with open_run(run_dir) as archive_:
        if program_id is None:
            best = archive_.best()
            if best is None:
                raise click.ClickException(f"{archive_.run_dir} has no scored program yet")
            program_id = best["program_id"]
        steps = list(reversed(archive_.lineage(program_id)))
        sign = archive_.problem.sign
    if as_json:
        echo_json([s.to_dict() for s in steps])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name in ("gen", "program", "iter", "island", "mutator", "status", "score", "change"):
        table.add_column(name, justify="right" if name in ("gen", "iter", "island", "score", "change") else "left")
    from evolve.query_model import same_score

    previous: float | None = None
    for s in steps:
        change = ""
        if s.score is not None and previous is not None:
            delta = s.score - previous
            verdict = "better" if delta * sign > 0 else "worse"
            change = "=" if same_score(s.score, previous) else f"{delta:+.4g} {verdict}"
        table.add_row(str(s.generation), s.program_id, str(s.iteration), str(s.island), s.mutator or "-",
                      s.status, fmt(s.score), change)
        if s.score is not None:
            previous = s.score
    make_console().print(table)
    if steps and steps[0].status == "missing":
        click.echo(f"warning: the chain breaks at {steps[0].program_id}: not in the archive", err=True)


# ---------------------------------------------------------------------------------------------------------------
# diff


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_name, tofile=new_name))


@archive.command()
@click.argument("run_dir")
@click.argument("program_a")
@click.argument("program_b", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print both ids, their scores and the diff as JSON.")
@friendly
def diff(run_dir: str, program_a: str, program_b: str | None, as_json: bool) -> None:
    """Unified diff from PROGRAM_A to PROGRAM_B, or from PROGRAM_A's parent to PROGRAM_A."""
    with open_run(run_dir) as archive_:
        if program_b is None:
            child = archive_.program(program_a)
            if child.parent_id is None:
                raise click.ClickException(f"program {child.program_id} has no parent (it is the seed)")
            old, new = archive_.program(child.parent_id), child
        else:
            old, new = archive_.program(program_a), archive_.program(program_b)
    text = unified_diff(old.code, new.code, f"a/{old.program_id}", f"b/{new.program_id}")
    if as_json:
        echo_json({"from": old.program_id, "to": new.program_id, "from_score": old.score, "to_score": new.score,
                    "diff": text})
        return
    click.echo(f"{old.program_id} (score {old.score}) -> {new.program_id} (score {new.score})")
    if not text:
        click.echo("(identical code)")
        return
    console = make_console()
    if console.is_terminal:
        from rich.syntax import Syntax

        console.print(Syntax(text, "diff", word_wrap=False))
    else:
        click.echo(text, nl=False)


# ---------------------------------------------------------------------------------------------------------------
# map


def project(grid: GridMap, x: int, y: int | None) -> dict[tuple[int, int], Any]:
    """Best elite per (row, column) of the chosen feature axes (the other axes are maximized over)."""
    best: dict[tuple[int, int], Any] = {}
    for e in grid.elites:
        key = (e.coords[y] if y is not None else 0, e.coords[x] if grid.features else 0)
        held = best.get(key)
        if held is None or (e.fitness, -e.iteration) > (held.fitness, -held.iteration):
            best[key] = e
    return best


def _axis(grid: GridMap, name: str | None, default: int | None) -> int | None:
    if name is None:
        return default
    names = [f.name for f in grid.features]
    if name not in names:
        raise click.ClickException(f"unknown feature {name!r}; the problem's features are {', '.join(names) or 'none'}")
    return names.index(name)


def _bin_label(feature: Any, index: int) -> str:
    width = (feature.max - feature.min) / feature.bins
    lo = feature.min + index * width
    return f"{lo:.4g}"


@archive.command("map")
@click.argument("run_dir")
@click.option("--island", type=click.IntRange(min=0), help="Island to show (default: every island).")
@click.option("--x", "x_name", help="Feature for the columns (default: the last feature).")
@click.option("--y", "y_name", help="Feature for the rows (default: the first feature when there are two or more).")
@click.option("--ids", is_flag=True, help="Show program ids instead of scores.")
@click.option("--json", "as_json", is_flag=True, help="Print each island's grid (shape, features, occupied cells) as JSON.")
@friendly
def map_command(run_dir: str, island: int | None, x_name: str | None, y_name: str | None, ids: bool,
                as_json: bool) -> None:
    """The MAP-Elites grid of each island as a table: the elite's score in every occupied cell."""
    with open_run(run_dir) as archive_:
        check_island(archive_, island)
        grids = archive_.grids([island] if island is not None else None)
        direction = archive_.problem.direction
    if as_json:
        echo_json([g.to_dict() for g in grids])
        return
    from rich.table import Table
    from rich.text import Text

    console = make_console()
    for grid in grids:
        dims = len(grid.features)
        x = _axis(grid, x_name, dims - 1 if dims else None)
        y = _axis(grid, y_name, 0 if dims >= 2 else None)
        if x is not None and x == y:
            raise click.ClickException("--x and --y must name different features")
        cells = project(grid, x if x is not None else 0, y)
        best = grid.best()
        fits = sorted(e.fitness for e in cells.values())
        title = (f"island {grid.island}: {len(grid.elites)}/{grid.n_cells} cells ({grid.coverage:.0%}); best "
                 f"{fmt(best.score) if best else '-'}{' (' + best.program_id + ')' if best else ''}")
        fx = grid.features[x] if x is not None and dims else None
        fy = grid.features[y] if y is not None else None
        click.echo(title)
        table = Table(box=None, pad_edge=False, show_lines=False)
        table.add_column(f"{fy.name} \\ {fx.name}" if fy and fx else (fx.name if fx else ""), justify="right",
                         style="bold")
        columns = fx.bins if fx else 1
        rows = fy.bins if fy else 1
        for c in range(columns):
            table.add_column(_bin_label(fx, c) if fx else "all", justify="right")
        for r in range(rows):
            label = _bin_label(fy, r) if fy else ""
            line: list[Any] = [label]
            for c in range(columns):
                e = cells.get((r, c))
                if e is None:
                    line.append(Text("·", style="dim"))
                    continue
                text = e.program_id[:8] if ids else fmt(e.score, ".4g")
                rank = fits.index(e.fitness) / max(1, len(fits) - 1)
                style = "green" if rank >= 0.75 else ("yellow" if rank >= 0.25 else "red")
                line.append(Text(text, style=style))
            table.add_row(*line)
        console.print(table)
        hidden = [f.name for i, f in enumerate(grid.features) if i not in (x, y)]
        if hidden:
            click.echo(f"(best over {', '.join(hidden)})")
        click.echo(f"score: {archive_.problem.score_metric} ({direction}); columns and rows show each bin's lower "
                   "edge")
        click.echo("")


for _command in (stats, verify, export, plot, report):
    archive.add_command(_command)
