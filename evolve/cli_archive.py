"""``evolve archive``: what a run found, from the command line.

Every subcommand takes a run folder (``archive/<problem>/<run-id>``; a problem folder ``archive/<problem>`` means its
newest run) and answers with one DuckDB query over the Parquet segments (see ``evolve.query``). Each has ``--json``
for scripts: the JSON goes to stdout alone, warnings (an unreadable segment, named with the reason) to stderr.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import functools
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # the query layer (DuckDB, pyarrow) loads only when an archive command runs
    from evolve.query import GridMap, RunArchive

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------------------------------------------------------
# Shared plumbing


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    file = sys.stderr if stderr else sys.stdout
    terminal = file.isatty()
    # Off a terminal rich would wrap at 80 columns; tables and code read better unwrapped in logs and pipes.
    return Console(file=file, highlight=False, width=None if terminal else max(120, shutil.get_terminal_size().columns))


def _warn_bad_files(archive: RunArchive) -> None:
    for path, reason in archive.bad_files:
        click.echo(f"warning: skipped unreadable segment {path}: {reason}", err=True)


@contextmanager
def _open(run_dir: str) -> Iterator[RunArchive]:
    from evolve.query import RunArchive

    archive = RunArchive(run_dir)
    try:
        yield archive
    finally:
        _warn_bad_files(archive)
        archive.close()


def _friendly(fn: F) -> F:
    """Turn query errors into one clear message and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from evolve.query import ArchiveQueryError

        try:
            return fn(*args, **kwargs)
        except ArchiveQueryError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(_nulled(data), indent=2, default=str))


def _nulled(data: Any) -> Any:
    """JSON has no NaN or infinity: scripts get null."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _nulled(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_nulled(v) for v in data]
    return data


def _fmt(value: float | None, spec: str = ".8g") -> str:
    return "-" if value is None else format(value, spec)


def _when(seconds: float | None) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


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
@click.option("--json", "as_json", is_flag=True)
@_friendly
def ls_command(root: str, as_json: bool) -> None:
    """Runs under ROOT (default ./archive; or one problem folder, or one run) with problem, size, best score and
    date."""
    from evolve.query import ArchiveRoot

    if not Path(root).exists():
        raise click.ClickException(f"{root}: no such folder")
    scan = ArchiveRoot.scan(root)
    listings = []
    for run_dir in scan.runs:
        with _open(str(run_dir)) as archive_:
            listings.append(archive_.listing())
    listings.sort(key=lambda r: (r.problem, r.created_at or 0.0, r.run_id))
    if as_json:
        _echo_json([r.to_dict() for r in listings])
        return
    if not listings:
        click.echo(f"no runs under {root}")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name, justify in (("problem", "left"), ("run", "left"), ("programs", "right"), ("best score", "right"),
                          ("created", "left"), ("state", "left"), ("mutator", "left"), ("folder", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in listings:
        table.add_row(r.problem, r.run_id, f"{r.programs:,}", _fmt(r.best_score), _when(r.created_at), r.state,
                      r.mutator, str(r.run_dir))
    _console().print(table)


# ---------------------------------------------------------------------------------------------------------------
# top


@archive.command()
@click.argument("run_dir")
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--island", type=click.IntRange(min=0), help="Only programs bred on this island.")
@click.option("--where", help="SQL condition over the summary columns, e.g. \"mutator LIKE 'llm:%'\".")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def top(run_dir: str, limit: int, island: int | None, where: str | None, as_json: bool) -> None:
    """Best programs of RUN_DIR with score, status, island and iteration."""
    with _open(run_dir) as archive_:
        rows = archive_.top(limit, island=island, where=where)
    if as_json:
        _echo_json([{k: v for k, v in r.items() if k != "fitness"} for r in rows])
        return
    click.echo(f"{'rank':>4}  {'program':16}  {'score':>14}  {'status':8}  {'island':>6}  {'iter':>6}  mutator")
    for rank, r in enumerate(rows, 1):
        click.echo(f"{rank:>4}  {r['program_id']:16}  {_fmt(r['score']):>14}  {r['status']:8}  {r['island']:>6}  "
                   f"{r['iteration']:>6}  {r['mutator']}")


# ---------------------------------------------------------------------------------------------------------------
# show


def _print_code(code: str, language: str) -> None:
    console = _console()
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
@_friendly
def show(run_dir: str, program_id: str, as_json: bool, no_code: bool, with_prompt: bool) -> None:
    """Metrics, stage outcomes, artifacts, code, edit and LLM exchange of one program (a unique id prefix will do)."""
    with _open(run_dir) as archive_:
        if as_json:
            _echo_json(_record_json(archive_, program_id))
            return
        r = archive_.program(program_id)
        language = archive_.problem.language
    click.echo(f"program {r.program_id}  status {r.status}  score {r.score}  island {r.island}  "
               f"iteration {r.iteration}  mutator {r.mutator}")
    click.echo(f"parent: {r.parent_id or '(none: seed)'}")
    if len(r.parent_ids) > 1:
        click.echo(f"inspirations: {', '.join(r.parent_ids[1:])}")
    click.echo(f"generation {r.generation}  fitness {r.fitness}  cell {r.cell}  created {_when(r.created_at)}  "
               f"mutate {r.mutate_seconds:.3f} s  evaluate {r.eval_seconds:.3f} s")
    click.echo(f"metrics: {json.dumps(r.metrics, sort_keys=True)}")
    if r.features:
        click.echo(f"features: {json.dumps(r.features, sort_keys=True)}")
    click.echo(f"isolation: {r.isolation or '-'}{'  (evaluator ran in the candidate process)' if r.in_process else ''}")
    if r.edit_error:
        click.echo(f"edit rejected: {r.edit_error}")
    if r.stages:
        _section("stages")
        for s in r.stages:
            metrics = ", ".join(f"{k}={_fmt(v, '.6g')}" for k, v in sorted(s.get("metrics", {}).items()))
            click.echo(f"[{s.get('stage')}] {s.get('status')}  {float(s.get('seconds', 0.0)):.3f} s"
                       f"{'  ' + metrics if metrics else ''}{'  ' + s['message'] if s.get('message') else ''}")
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
        _section(name)
        click.echo(text)


# ---------------------------------------------------------------------------------------------------------------
# lineage


@archive.command()
@click.argument("run_dir")
@click.argument("program_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@_friendly
def lineage(run_dir: str, program_id: str | None, as_json: bool) -> None:
    """Ancestors of PROGRAM_ID (default: the best program), from the seed down, with the score at each step."""
    with _open(run_dir) as archive_:
        if program_id is None:
            best = archive_.best()
            if best is None:
                raise click.ClickException(f"{archive_.run_dir} has no scored program yet")
            program_id = best["program_id"]
        steps = list(reversed(archive_.lineage(program_id)))
        sign = archive_.problem.sign
    if as_json:
        _echo_json([s.to_dict() for s in steps])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name in ("gen", "program", "iter", "island", "mutator", "status", "score", "change"):
        table.add_column(name, justify="right" if name in ("gen", "iter", "island", "score", "change") else "left")
    previous: float | None = None
    for s in steps:
        change = ""
        if s.score is not None and previous is not None:
            delta = s.score - previous
            verdict = "better" if delta * sign > 0 else ("worse" if delta * sign < 0 else "")
            change = f"{delta:+.4g} {verdict}" if delta else "="
        table.add_row(str(s.generation), s.program_id, str(s.iteration), str(s.island), s.mutator or "-",
                      s.status, _fmt(s.score), change)
        if s.score is not None:
            previous = s.score
    _console().print(table)
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
@click.option("--json", "as_json", is_flag=True)
@_friendly
def diff(run_dir: str, program_a: str, program_b: str | None, as_json: bool) -> None:
    """Unified diff from PROGRAM_A to PROGRAM_B, or from PROGRAM_A's parent to PROGRAM_A."""
    with _open(run_dir) as archive_:
        if program_b is None:
            child = archive_.program(program_a)
            if child.parent_id is None:
                raise click.ClickException(f"program {child.program_id} has no parent (it is the seed)")
            old, new = archive_.program(child.parent_id), child
        else:
            old, new = archive_.program(program_a), archive_.program(program_b)
    text = unified_diff(old.code, new.code, f"a/{old.program_id}", f"b/{new.program_id}")
    if as_json:
        _echo_json({"from": old.program_id, "to": new.program_id, "from_score": old.score, "to_score": new.score,
                    "diff": text})
        return
    click.echo(f"{old.program_id} (score {old.score}) -> {new.program_id} (score {new.score})")
    if not text:
        click.echo("(identical code)")
        return
    console = _console()
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
@click.option("--json", "as_json", is_flag=True)
@_friendly
def map_command(run_dir: str, island: int | None, x_name: str | None, y_name: str | None, ids: bool,
                as_json: bool) -> None:
    """The MAP-Elites grid of each island as a table: the elite's score in every occupied cell."""
    with _open(run_dir) as archive_:
        grids = archive_.grids([island] if island is not None else None)
        direction = archive_.problem.direction
    if as_json:
        _echo_json([g.to_dict() for g in grids])
        return
    from rich.table import Table
    from rich.text import Text

    console = _console()
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
                 f"{_fmt(best.score) if best else '-'}{' (' + best.program_id + ')' if best else ''}")
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
                text = e.program_id[:8] if ids else _fmt(e.score, ".4g")
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


# ---------------------------------------------------------------------------------------------------------------
# stats


@archive.command()
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def stats(run_dir: str, as_json: bool) -> None:
    """Outcomes, failure rates, coverage, mutator success, LLM tokens and cost, timing of a run."""
    with _open(run_dir) as archive_:
        summary = archive_.summary()
    if as_json:
        _echo_json(summary)
        return
    from rich.table import Table

    console = _console()
    best, seed = summary["best"], summary["seed"]
    click.echo(f"run {summary['run_id']}  problem {summary['problem']}  state {summary['state'] or '-'}  "
               f"created {_when(summary['created_at'])}")
    click.echo(f"score: {summary['score_metric']} ({summary['direction']})")
    click.echo(f"programs {summary['programs']}  evaluated {summary['evaluated']}  "
               f"failure rate {summary['failure_rate']:.1%}  last iteration {summary['last_iteration']}")
    if best:
        click.echo(f"best {_fmt(best['score'])} ({best['program_id']}, island {best['island']}, iteration "
                   f"{best['iteration']})  seed {_fmt(seed['score'] if seed else None)}  improvement "
                   f"{_fmt(summary['improvement'], '.6g')}")
    timing = [f"mean evaluation {_fmt(summary['mean_eval_seconds'], '.3f')} s",
              f"mean mutation {_fmt(summary['mean_mutate_seconds'], '.3f')} s"]
    if summary["span_seconds"] is not None:
        timing.append(f"span {summary['span_seconds']:.1f} s")
    click.echo("  ".join(timing))
    table = Table(title="outcomes", title_justify="left", box=None, pad_edge=False)
    table.add_column("status")
    table.add_column("programs", justify="right")
    table.add_column("share", justify="right")
    total = max(1, summary["programs"])
    for status, n in summary["statuses"].items():
        table.add_row(status, str(n), f"{n / total:.1%}")
    console.print(table)
    cover = "  ".join(f"island {i}: {c:.0%}" for i, c in summary["coverage"].items())
    click.echo(f"coverage: {cover}")
    if summary["mutators"]:
        table = Table(title="mutators", title_justify="left", box=None, pad_edge=False)
        for name in ("mutator", "children", "ok", "improved on parent"):
            table.add_column(name, justify="left" if name == "mutator" else "right")
        for m in summary["mutators"]:
            table.add_row(m["mutator"], str(m["children"]), str(m["ok"]), str(m["improved"]))
        console.print(table)
    llm = summary["llm"]
    totals = summary["loop"].get("mutator", {}).get("totals", {}) if isinstance(summary["loop"], dict) else {}
    if llm["answers"] or totals:
        calls = totals.get("calls", llm["answers"])
        click.echo(f"llm: {calls} calls, {totals.get('tokens', llm['tokens'])} tokens, "
                   f"cost ${float(totals.get('cost', llm['cost'])):.4f}")
    if summary["isolation"]:
        click.echo("isolation: " + ", ".join(f"{k} ({v})" for k, v in summary["isolation"].items()))
    if summary["in_process"]:
        click.echo(f"in-process evaluations (evaluator shared the candidate's process): {summary['in_process']}")
    loop = summary["loop"]
    if loop:
        click.echo(f"last session: stopped by {loop.get('stop_reason') or '-'}"
                   f"{' (' + loop['stop_message'] + ')' if loop.get('stop_message') else ''}, "
                   f"{_fmt(loop.get('elapsed_seconds_this_session'), '.1f')} s")


# ---------------------------------------------------------------------------------------------------------------
# export

_FORMATS = ("csv", "json", "parquet")


def _export_where(statuses: tuple[str, ...], min_score: float | None, max_score: float | None,
                  where: str | None) -> str | None:
    parts = []
    if statuses:
        quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in statuses)
        parts.append(f"status IN ({quoted})")
    if min_score is not None:
        parts.append(f"score >= {float(min_score)!r}")
    if max_score is not None:
        parts.append(f"score <= {float(max_score)!r}")
    if where:
        parts.append(f"({where})")
    return " AND ".join(parts) or None


def write_table(table: Any, path: Path, fmt: str) -> None:
    """Write archive rows as Parquet (as stored), CSV (lists and JSON columns as JSON text) or JSON (decoded)."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd")
        return
    rows = table.to_pylist()
    json_columns = {"metrics", "features", "stages", "artifacts", "llm"}
    if fmt == "json":
        out = []
        for row in rows:
            item = {}
            for key, value in row.items():
                if key in json_columns and isinstance(value, str):
                    value = json.loads(value or "null")
                elif hasattr(value, "isoformat"):
                    value = value.isoformat()
                item[key] = value
            out.append(_nulled(item))
        path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([json.dumps(v) if isinstance(v, list) else ("" if v is None else v)
                             for v in (row[c] for c in table.column_names)])


@archive.command()
@click.argument("run_dir")
@click.argument("program_id", required=False)
@click.option("-o", "--output", help="File to write ('-' or none: the code to stdout, for one program).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), help="Archive export format (default: the suffix).")
@click.option("--status", "statuses", multiple=True, help="Keep only these statuses (repeatable).")
@click.option("--min-score", type=float)
@click.option("--max-score", type=float)
@click.option("--where", help="Extra SQL condition over the archive columns.")
@click.option("--columns", help="Comma-separated columns (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Report what was written as JSON.")
@_friendly
def export(run_dir: str, program_id: str | None, output: str | None, fmt: str | None, statuses: tuple[str, ...],
           min_score: float | None, max_score: float | None, where: str | None, columns: str | None,
           as_json: bool) -> None:
    """Write one program's code to a file, or the archive (filtered) to CSV, JSON or Parquet."""
    with _open(run_dir) as archive_:
        if program_id is not None:
            record = archive_.program(program_id)
            if output in (None, "-"):
                click.echo(record.code, nl=not record.code.endswith("\n"))
                return
            path = Path(output)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(record.code, encoding="utf-8")
            if as_json:
                _echo_json({"program_id": record.program_id, "path": str(path), "bytes": len(record.code.encode())})
            else:
                click.echo(f"wrote program {record.program_id} (score {record.score}) to {path}")
            return
        if not output or output == "-":
            raise click.ClickException("exporting the archive needs -o FILE (.csv, .json or .parquet)")
        path = Path(output)
        fmt = fmt or path.suffix.lstrip(".").lower()
        if fmt not in _FORMATS:
            raise click.ClickException(f"cannot tell the format of {path}; pass --format {'/'.join(_FORMATS)}")
        cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        table = archive_.table(_export_where(statuses, min_score, max_score, where), cols)
    write_table(table, path, fmt)
    if as_json:
        _echo_json({"path": str(path), "format": fmt, "rows": table.num_rows, "columns": table.column_names})
    else:
        click.echo(f"wrote {table.num_rows} programs to {path} ({fmt})")


# ---------------------------------------------------------------------------------------------------------------
# plot and report


@archive.command()
@click.argument("run_dir")
@click.option("-o", "--output", "out_dir", help="Folder for the PNG files (default RUN_DIR/plots).")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def plot(run_dir: str, out_dir: str | None, as_json: bool) -> None:
    """PNG plots: best and median score over iterations, failure rates over time, the MAP-Elites heatmap per
    island."""
    from evolve.plots import write_plots

    with _open(run_dir) as archive_:
        paths = write_plots(archive_, Path(out_dir) if out_dir else archive_.run_dir / "plots")
    if as_json:
        _echo_json({name: str(path) for name, path in paths.items()})
        return
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@archive.command()
@click.argument("run_dir")
@click.option("-o", "--output", help="HTML file (default RUN_DIR/report.html).")
@click.option("--top", "top_n", default=5, show_default=True, type=click.IntRange(min=1),
              help="Programs shown with code and diff.")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def report(run_dir: str, output: str | None, top_n: int, as_json: bool) -> None:
    """One self-contained HTML file: plots, top programs with code and diffs, the best's lineage, settings, costs."""
    from evolve.report import write_report

    with _open(run_dir) as archive_:
        path = write_report(archive_, Path(output) if output else archive_.run_dir / "report.html", top=top_n)
    if as_json:
        _echo_json({"path": str(path), "bytes": path.stat().st_size})
    else:
        click.echo(f"wrote {path}")
