"""``evolve archive stats`` and ``evolve archive verify``: a run's figures, and whether every byte of it reads back."""

from __future__ import annotations

import sys
from typing import Any

import click

from evolve.cli_archive_common import echo_json, fmt, friendly, make_console, open_run, when


@click.command()
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True, help="Print every figure (and the loop's own stats.json) as JSON.")
@friendly
def stats(run_dir: str, as_json: bool) -> None:
    """Outcomes, failure rates, coverage, mutator success, LLM tokens and cost, timing of a run."""
    from evolve.query_stats import describe_improvement

    with open_run(run_dir) as archive_:
        summary = archive_.summary()
    if as_json:
        echo_json(summary)
        return
    from rich.table import Table

    console = make_console()
    best, seed = summary["best"], summary["seed"]
    click.echo(f"run {summary['run_id']}  problem {summary['problem']}  state {summary['state'] or '-'}  "
               f"created {when(summary['created_at'])}")
    click.echo(f"score: {summary['score_metric']} ({summary['direction']})")
    click.echo(f"programs {summary['programs']}  evaluated {summary['evaluated']}  "
               f"failure rate {summary['failure_rate']:.1%}  last iteration {summary['last_iteration']}")
    if best:
        click.echo(f"best {fmt(best['score'])} ({best['program_id']}, island {best['island']}, iteration "
                   f"{best['iteration']})  seed {fmt(seed['score'] if seed else None)}")
        click.echo(f"improvement: {describe_improvement(summary)}")
    timing = [f"mean evaluation {fmt(summary['mean_eval_seconds'], '.3f')} s",
              f"mean mutation {fmt(summary['mean_mutate_seconds'], '.3f')} s"]
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
    _print_damage(summary)
    loop = summary["loop"]
    if loop:
        click.echo(f"last session: stopped by {loop.get('stop_reason') or '-'}"
                   f"{' (' + loop['stop_message'] + ')' if loop.get('stop_message') else ''}, "
                   f"{fmt(loop.get('elapsed_seconds_this_session'), '.1f')} s")


def _print_damage(summary: dict[str, Any]) -> None:
    lost = summary.get("lost") or {}
    if lost.get("count"):
        from evolve.ranges import format_ranges, from_ranges

        ranges = format_ranges(from_ranges(lost.get("iterations")))
        unknown = f", {lost['unknown_rows']} of unknown iteration" if lost.get("unknown_rows") else ""
        moved = ", ".join(str(f.get("file")) for f in lost.get("files") or [])
        click.echo(f"lost: {lost['count']} iteration(s) lost to damage ({ranges or '-'}{unknown}); counted against "
                   f"the budget, numbers not reused; damaged files kept in damaged/: {moved or '-'}")
    damage = summary.get("damage") or []
    if damage:
        click.echo(f"damage not yet handled: {len(damage)} file(s) left out of these figures:")
        for item in damage:
            click.echo(f"  - {item['description']}")


@click.command()
@click.argument("run_dir")
@click.option("--cached", is_flag=True, help="Skip segments verified before (unchanged since); default: read all.")
@click.option("--json", "as_json", is_flag=True, help="Print what was checked and every damaged file as JSON.")
@friendly
def verify(run_dir: str, cached: bool, as_json: bool) -> None:
    """Read every segment, migration file and journal line of RUN_DIR in full, every page checksum checked; list
    what does not read back and what it held. Exit status 1 when something is damaged."""
    from evolve.segments import EVENTS_DIR, MIGRATIONS_DIR, SEGMENTS_DIR, segment_files

    with open_run(run_dir, verify=False) as archive_:
        damage = archive_.check_files(use_cache=cached)
        programs = archive_.count()
        archive_.bad_files.clear()  # listed below, with what they held: no separate warning
        archive_.damage = []
        lost = archive_.info.get("lost") or {}
        checked = {sub: len(segment_files(archive_.run_dir / sub)) for sub in (SEGMENTS_DIR, MIGRATIONS_DIR, EVENTS_DIR)}
        where = archive_.run_dir
    if as_json:
        echo_json({"run_dir": str(where), "ok": not damage, "files": checked, "programs": programs,
                   "damage": [d.to_dict() | {"description": d.describe()} for d in damage], "lost": lost})
    elif not damage:
        click.echo(f"{where}: every file reads back ({checked[SEGMENTS_DIR]} segment(s), "
                   f"{checked[MIGRATIONS_DIR]} migration file(s), {checked[EVENTS_DIR]} events file(s), journals; "
                   f"{programs:,} programs)")
    else:
        click.echo(f"{where}: {len(damage)} damaged file(s); {programs:,} programs read back:")
        for item in damage:
            click.echo(f"  - {item.describe()}")
        consequence = ("their iterations are recorded as lost" if any(d.table == "programs" for d in damage)
                       else "no iteration is lost: the files hold no program rows")
        click.echo("Nothing was changed. To continue the run: restore the files from a backup and resume, or resume "
                   f"with `evolve run PROBLEM --resume --run-dir {where} --accept-damage` (the damaged files go to "
                   f"{where / 'damaged'}/; {consequence}).")
    if lost.get("count") and not as_json:
        click.echo(f"lost earlier (accepted): {lost['count']} iteration(s)")
    if damage:
        sys.exit(1)
