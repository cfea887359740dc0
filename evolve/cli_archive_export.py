"""``evolve archive export``, ``plot`` and ``report``: a run's rows and figures written to files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click

from evolve.cli_archive_common import check_where, echo_json, friendly, nulled, open_run
from evolve.types import Status

_FORMATS = ("csv", "json", "jsonl", "parquet")
_SUFFIXES = {"csv": "csv", "json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "parquet": "parquet", "pq": "parquet"}
_STATUSES = tuple(s.value for s in Status)


def _export_where(statuses: tuple[str, ...], min_score: float | None, max_score: float | None,
                  where: str | None) -> str | None:
    from evolve.query_index import sql_str  # here: importing this module stays free of DuckDB

    parts = []
    if statuses:
        parts.append(f"status IN ({', '.join(sql_str(s) for s in statuses)})")
    if min_score is not None:
        parts.append(f"score >= {float(min_score)!r}")
    if max_score is not None:
        parts.append(f"score <= {float(max_score)!r}")
    if where:
        parts.append(f"({where})")
    return " AND ".join(parts) or None


def format_for(path: Path, given: str | None) -> str:
    """The export format: ``given``, else the file's suffix (``.jsonl`` and ``.ndjson`` are JSON Lines)."""
    fmt = given or _SUFFIXES.get(path.suffix.lstrip(".").lower(), "")
    if fmt not in _FORMATS:
        known = ", ".join(f".{s}" for s in _SUFFIXES)
        raise click.ClickException(f"cannot tell the format of {path} from its suffix ({known}); pass --format "
                                   f"{'/'.join(_FORMATS)}")
    return fmt


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for JSON: JSON-text columns decoded, timestamps as ISO text, NaN and infinities as null."""
    json_columns = {"metrics", "features", "stages", "artifacts", "llm"}
    out = []
    for row in rows:
        item = {}
        for key, value in row.items():
            if key in json_columns and isinstance(value, str):
                value = json.loads(value or "null")
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            item[key] = value
        out.append(nulled(item))
    return out


def write_table(table: Any, path: Path, fmt: str) -> None:
    """Write archive rows as Parquet (as stored), CSV (lists and JSON columns as JSON text), JSON (one array, JSON
    columns decoded) or JSON Lines (one object per line, decoded)."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd")
        return
    rows = table.to_pylist()
    if fmt == "json":
        path.write_text(json.dumps(_decoded(rows), indent=1) + "\n", encoding="utf-8")
        return
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for item in _decoded(rows):
                f.write(json.dumps(item) + "\n")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([json.dumps(v) if isinstance(v, list) else ("" if v is None else v)
                             for v in (row[c] for c in table.column_names)])


@click.command()
@click.argument("run_dir")
@click.argument("program_id", required=False)
@click.option("-o", "--output", help="File to write ('-' or none: the code to stdout, for one program).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), help="Archive export format (default: from the suffix: "
              ".csv, .json, .jsonl or .ndjson, .parquet).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(_STATUSES),
              help="Keep only these statuses (repeatable).")
@click.option("--min-score", type=float, help="Keep only programs scoring at least this.")
@click.option("--max-score", type=float, help="Keep only programs scoring at most this.")
@click.option("--where", help="Extra SQL condition over the archive columns.")
@click.option("--columns", help="Comma-separated columns (default: all).")
@click.option("--approved", is_flag=True, help="Only programs a person approved (evolve archive approve).")
@click.option("--json", "as_json", is_flag=True, help="Report what was written as JSON.")
@friendly
def export(run_dir: str, program_id: str | None, output: str | None, fmt: str | None, statuses: tuple[str, ...],
           min_score: float | None, max_score: float | None, where: str | None, columns: str | None,
           approved: bool, as_json: bool) -> None:
    """Write one program's code to a file, or the archive (filtered) to CSV, JSON, JSON Lines or Parquet.

    An export that matches no program writes an empty file and says so (exit status 0): the question was valid."""
    with open_run(run_dir) as archive_:
        if program_id is not None:
            record = archive_.program(program_id)
            if output in (None, "-"):
                click.echo(record.code, nl=not record.code.endswith("\n"))
                return
            path = Path(output)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(record.code, encoding="utf-8")
            if as_json:
                echo_json({"program_id": record.program_id, "path": str(path), "bytes": len(record.code.encode())})
            else:
                click.echo(f"wrote program {record.program_id} (score {record.score}) to {path}")
            return
        if not output or output == "-":
            raise click.ClickException("exporting the archive needs -o FILE (.csv, .json, .jsonl or .parquet)")
        path = Path(output)
        fmt = format_for(path, fmt)
        cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        if where:
            check_where(archive_, where, "programs_raw", "export --where")
        if approved:
            from evolve.oversight.read import approved_where

            where = f"({approved_where(archive_)})" + (f" AND ({where})" if where else "")
        condition = _export_where(statuses, min_score, max_score, where)
        table = archive_.table(condition, cols, structured=False)
    write_table(table, path, fmt)
    if as_json:
        echo_json({"path": str(path), "format": fmt, "rows": table.num_rows, "columns": table.column_names})
    else:
        click.echo(f"wrote {table.num_rows} programs to {path} ({fmt})")
    if not table.num_rows:
        click.echo(f"note: no program matches {describe_filter(statuses, min_score, max_score, where)}", err=True)


def describe_filter(statuses: tuple[str, ...], min_score: float | None, max_score: float | None,
                    where: str | None) -> str:
    parts = []
    if statuses:
        parts.append(f"--status {' '.join(statuses)}")
    if min_score is not None:
        parts.append(f"--min-score {min_score:g}")
    if max_score is not None:
        parts.append(f"--max-score {max_score:g}")
    if where:
        parts.append(f"--where {where!r}")
    return " ".join(parts) or "(no filter)"


@click.command()
@click.argument("run_dir")
@click.option("-o", "--output", "out_dir", help="Folder for the PNG files (default RUN_DIR/plots).")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON (plot name -> path).")
@friendly
def plot(run_dir: str, out_dir: str | None, as_json: bool) -> None:
    """PNG plots: best and median score over iterations, failure rates over time, the MAP-Elites heatmap per
    island."""
    from evolve.plots import write_plots

    with open_run(run_dir) as archive_:
        paths = write_plots(archive_, Path(out_dir) if out_dir else archive_.run_dir / "plots")
    if as_json:
        echo_json({name: str(path) for name, path in paths.items()})
        return
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@click.command()
@click.argument("run_dir")
@click.option("-o", "--output", help="HTML file (default RUN_DIR/report.html).")
@click.option("--top", "top_n", default=5, show_default=True, type=click.IntRange(min=1),
              help="Programs shown with code and diff.")
@click.option("--json", "as_json", is_flag=True, help="Print the written file and its size as JSON.")
@friendly
def report(run_dir: str, output: str | None, top_n: int, as_json: bool) -> None:
    """One self-contained HTML file: plots, top programs with code and diffs, the best's lineage, settings, costs."""
    from evolve.report import write_report

    with open_run(run_dir) as archive_:
        path = write_report(archive_, Path(output) if output else archive_.run_dir / "report.html", top=top_n)
    if as_json:
        echo_json({"path": str(path), "bytes": path.stat().st_size})
    else:
        click.echo(f"wrote {path}")
