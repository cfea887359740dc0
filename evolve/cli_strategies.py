"""``evolve archive strategies RUN``: the run's co-evolved search strategies with their fitness and lineage, and its
scratchpad notes (see ``evolve.search``).

A click command object; the ``archive`` group registers it.
"""

from __future__ import annotations

import click

from evolve.cli_archive_common import friendly, open_run


@click.command("strategies")
@click.argument("run_dir", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print every strategy (prompt and answer included) and every "
                                                       "version of the notes as JSON.")
@click.option("--notes", "show_notes", is_flag=True, help="Also print the latest scratchpad notes.")
@friendly
def strategies(run_dir: str, as_json: bool, show_notes: bool) -> None:
    """Strategies of RUN, fittest first: id, parent, the iteration it was made at, children, how many beat their
    parent, fitness (that share shrunk toward the run's rate) and the start of its text; active ones marked *.

    RUN is a run folder (archive/<problem>/<run-id>), or a problem's folder under archive/ for its newest run.
    """
    import json

    from evolve.search.listing import strategy_listing

    with open_run(run_dir) as archive:
        listing = strategy_listing(archive)
        shown_dir = archive.run_dir
    if as_json:
        click.echo(json.dumps({"run_dir": str(shown_dir), **listing.to_dict()}, indent=2))
        return
    if not listing.strategies:
        click.echo(f"no strategies in {shown_dir} (the run had no [search.strategies])")
    else:
        click.echo(f"{len(listing.strategies)} strategies of {shown_dir} (run's success rate "
                   f"{listing.base:.3f}; * active)")
        click.echo(f"  {'id':<10} {'parent':<10} {'born':>6} {'children':>8} {'beat':>5} {'fitness':>7}  text")
        for s in sorted(listing.strategies, key=lambda s: (-s.fitness, s.iteration)):
            text = " ".join(s.text.split())
            text = text if len(text) <= 70 else text[:67] + "..."
            click.echo(f"{'*' if s.active else ' '} {s.id:<10} {s.parent or '-':<10} {s.iteration:>6} "
                       f"{s.children:>8} {s.improved:>5} {s.fitness:>7.3f}  {text}")
        if listing.failed:
            click.echo(f"{len(listing.failed)} generation(s) gave no usable strategy")
    if listing.scratchpad:
        latest = listing.scratchpad[-1]
        click.echo(f"scratchpad: {len(listing.scratchpad)} version(s), latest at iteration {latest.iteration}")
        if show_notes:
            click.echo(latest.notes)
