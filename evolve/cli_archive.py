"""``evolve archive``: inspect what a run found."""

from __future__ import annotations

import json
from pathlib import Path

import click

from evolve.archive import read_programs


def _run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "run.json").exists() and not (run_dir / "segments").exists():
        raise click.ClickException(f"{run_dir} is not a run folder (no run.json or segments/)")
    return run_dir


def _read(run_dir: Path, columns: list[str] | None = None):  # type: ignore[no-untyped-def]
    result = read_programs(run_dir, columns=columns)
    for path, reason in result.bad_files:
        click.echo(f"warning: skipped unreadable segment {path}: {reason}", err=True)
    return result.table


@click.group()
def archive() -> None:
    """Inspect runs: best programs, single programs."""


@archive.command()
@click.argument("run_dir")
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def top(run_dir: str, limit: int, as_json: bool) -> None:
    """Best programs of RUN_DIR with score, status, island and iteration."""
    table = _read(_run_dir(run_dir), ["program_id", "score", "fitness", "status", "island", "iteration", "mutator"])
    rows = [r for r in table.to_pylist() if r["fitness"] is not None]
    rows.sort(key=lambda r: (-r["fitness"], r["iteration"]))
    rows = rows[:limit]
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "fitness"} for r in rows], indent=2))
        return
    click.echo(f"{'rank':>4}  {'program':16}  {'score':>14}  {'status':8}  {'island':>6}  {'iter':>6}  mutator")
    for rank, r in enumerate(rows, 1):
        click.echo(f"{rank:>4}  {r['program_id']:16}  {r['score']:>14.8g}  {r['status']:8}  {r['island']:>6}  "
                   f"{r['iteration']:>6}  {r['mutator']}")


@archive.command()
@click.argument("run_dir")
@click.argument("program_id")
@click.option("--json", "as_json", is_flag=True)
def show(run_dir: str, program_id: str, as_json: bool) -> None:
    """Metrics, code, parent and edit of one program."""
    table = _read(_run_dir(run_dir))
    rows = [r for r in table.to_pylist() if r["program_id"].startswith(program_id)]
    if not rows:
        raise click.ClickException(f"no program {program_id!r} in {run_dir}")
    row = rows[0]
    if as_json:
        click.echo(json.dumps(row, indent=2, default=str))
        return
    click.echo(f"program {row['program_id']}  status {row['status']}  score {row['score']}  "
               f"island {row['island']}  iteration {row['iteration']}  mutator {row['mutator']}")
    click.echo(f"parent: {(row['parent_ids'] or ['(none: seed)'])[0]}")
    click.echo(f"metrics: {row['metrics']}")
    if row["edit_error"]:
        click.echo(f"edit rejected: {row['edit_error']}")
    click.echo("--- code ---")
    click.echo(row["code"])
    if row["edit"]:
        click.echo("--- edit ---")
        click.echo(row["edit"])
    artifacts = json.loads(row["artifacts"] or "{}")
    for name, text in artifacts.items():
        click.echo(f"--- {name} ---")
        click.echo(text)
