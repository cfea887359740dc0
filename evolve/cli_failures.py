"""``evolve archive failures RUN``: why a run's programs failed, grouped (see ``evolve.failures``).

A click command object; the ``archive`` group registers it.
"""

from __future__ import annotations

import json

import click


@click.command("failures")
@click.argument("run_dir", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and its groups as JSON.")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many groups to show, most frequent first.")
def failures(run_dir: str, as_json: bool, limit: int) -> None:
    """Failed programs of RUN grouped by status and normalised message (numbers, ids, paths and line numbers
    replaced), most frequent first, each with its count and the id of an example program.

    RUN is a run folder (archive/<problem>/<run-id>), or a problem's folder under archive/ for its newest run.
    """
    from evolve.failures import summarise_failures
    from evolve.query import ArchiveQueryError, RunArchive

    try:
        with RunArchive(run_dir) as archive:
            summary = summarise_failures(archive)
            shown_dir = archive.run_dir
            for path, reason in archive.bad_files:
                click.echo(f"warning: skipped unreadable segment {path}: {reason}", err=True)
    except ArchiveQueryError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"run_dir": str(shown_dir), **summary.to_dict(limit)}, indent=2))
        return
    if not summary.failed:
        click.echo(f"no failed program among the {summary.programs} programs of {shown_dir}")
        return
    click.echo(f"{summary.failed} of {summary.programs} programs failed ({summary.failed_share:.0%}) in "
               f"{len(summary.groups)} group(s): {shown_dir}")
    shown = summary.top(limit)
    status_width = max(len("status"), *(len(g.status) for g in shown))
    id_width = max(len("example"), *(len(g.example_id) for g in shown))
    # The reason goes last, whole: it is what the user reads, and it never pushes the other columns around.
    click.echo(f"{'count':>6}  {'of failed':>9}  {'status':<{status_width}}  {'example':<{id_width}}  reason")
    for group in shown:
        click.echo(f"{group.count:>6}  {group.count / summary.failed:>9.0%}  {group.status:<{status_width}}  "
                   f"{group.example_id:<{id_width}}  {group.reason}")
    hidden = len(summary.groups) - limit
    if hidden > 0:
        click.echo(f"({hidden} more group(s): --limit {len(summary.groups)})")
    click.echo(f"an example in full: evolve archive show {shown_dir} {summary.groups[0].example_id}")
