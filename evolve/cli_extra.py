"""``evolve init`` and ``evolve problems``: start a problem, see the shipped ones.

The main group registers them: ``main.add_command(init)`` and ``main.add_command(problems)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from evolve.scaffold import ScaffoldError, list_problems, scaffold, shipped_problems_dir


@click.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Write into an existing, non-empty folder (overwrites the files).")
def init(folder: str, force: bool) -> None:
    """Create a problem folder FOLDER (problem.toml, seed with evolve blocks, evaluator, README) that runs as is."""
    try:
        written = scaffold(folder, force=force)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {folder}/ with " + ", ".join(p.name for p in written))
    click.echo("next:")
    click.echo(f"  evolve eval {folder} {Path(folder) / 'initial_program.py'}")
    click.echo(f"  evolve run {folder} --mutator tune --iterations 20")


@click.command()
@click.option("--root", type=click.Path(exists=True, file_okay=False),
              help="Folder of problem folders (default: the problems shipped with evolve).")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list.")
def problems(root: str | None, as_json: bool) -> None:
    """List problem folders (problem.toml or OpenEvolve format) with their score and a one-line summary."""
    folder = Path(root) if root else shipped_problems_dir()
    if folder is None:
        raise click.ClickException("no problems folder found next to this installation; pass --root")
    found = list_problems(folder)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in found], indent=2))
        return
    if not found:
        click.echo(f"no problem folders under {folder}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name in ("problem", "format", "language", "score", "stages", "summary", "folder"):
        table.add_column(name, justify="right" if name == "stages" else "left", no_wrap=name != "summary",
                         overflow="fold")
    for p in found:
        if p.error:
            table.add_row(p.name, p.kind, "", "", "", f"[red]invalid: {p.error}[/red]", str(p.path))
        else:
            table.add_row(p.name, p.kind, p.language, p.score, str(p.stages), p.summary, str(p.path))
    Console(highlight=False, width=None if Console().is_terminal else 200).print(table)
