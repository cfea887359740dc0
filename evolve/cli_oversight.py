"""``evolve archive approve | reject | release | audit``: people's decisions on a run's programs, and its audit trail.

Click command objects; ``evolve.cli`` registers them in the ``archive`` group. Decisions are appended to the run's
events (see ``evolve.oversight.decisions``); ``audit`` lists everything that bears on trusting the run's results
(``evolve.oversight.audit``).
"""

from __future__ import annotations

from typing import Any

import click

from evolve.cli_archive_common import echo_json, friendly, open_run


def _decide(run_dir: str, program_id: str, decision: str, by: str, note: str, force: bool, as_json: bool) -> None:
    from evolve.oversight.decisions import DecisionRefused, decide

    try:
        recorded = decide(run_dir, program_id, decision, by, note, force)
    except DecisionRefused as exc:
        raise click.ClickException(str(exc)) from None
    _report(recorded, as_json)


def _report(recorded: Any, as_json: bool) -> None:
    if as_json:
        echo_json({"program_id": recorded.program_id, "kind": recorded.kind, "event_id": recorded.event_id,
                   **recorded.data})
        return
    data = recorded.data
    what = data.get("decision") or "released"
    forced = " (FORCED: the program is not promoted; the record says so)" if data.get("forced") else ""
    click.echo(f"{recorded.program_id}: {what} by {data['by']}{forced}; code sha256 {data['code_sha256'][:16]}")


_BY = click.option("--by", required=True, help="Who decides (recorded with the decision).")
_NOTE = click.option("--note", default="", help="Why (recorded with the decision).")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the record (or the trail) as JSON.")


@click.command()
@click.argument("run_dir")
@click.argument("program_id")
@_BY
@_NOTE
@click.option("--force", is_flag=True, help="Approve a program that is not promoted (the record says it was forced).")
@_JSON
@friendly
def approve(run_dir: str, program_id: str, by: str, note: str, force: bool, as_json: bool) -> None:
    """Sign off PROGRAM_ID of RUN_DIR as approved (who, when, a note, the code's SHA-256)."""
    _decide(run_dir, program_id, "approved", by, note, force, as_json)


@click.command()
@click.argument("run_dir")
@click.argument("program_id")
@_BY
@_NOTE
@_JSON
@friendly
def reject(run_dir: str, program_id: str, by: str, note: str, as_json: bool) -> None:
    """Record that PROGRAM_ID of RUN_DIR is rejected (who, when, a note, the code's SHA-256)."""
    _decide(run_dir, program_id, "rejected", by, note, False, as_json)


@click.command()
@click.argument("run_dir")
@click.argument("program_id")
@_BY
@_NOTE
@_JSON
@friendly
def release(run_dir: str, program_id: str, by: str, note: str, as_json: bool) -> None:
    """Lift the quarantine of PROGRAM_ID: it may be a parent again once the run resumes, and is checked like any
    program (the tripwires that caught it do not catch it again)."""
    from evolve.oversight.decisions import DecisionRefused
    from evolve.oversight.decisions import release as release_program

    try:
        recorded = release_program(run_dir, program_id, by, note)
    except DecisionRefused as exc:
        raise click.ClickException(str(exc)) from None
    _report(recorded, as_json)


@click.command("audit")
@click.argument("run_dir")
@_JSON
@friendly
def audit_command(run_dir: str, as_json: bool) -> None:
    """Everything that bears on trusting RUN_DIR's results, in time order: promotions, held-out disagreements,
    flaky re-evaluations, tripwires, quarantines and releases, approvals and rejections, stops, sandbox level changes
    and damage, each with its program and numbers."""
    from evolve.oversight.audit import audit

    with open_run(run_dir) as archive:
        entries = audit(archive)
    if as_json:
        echo_json([e.to_dict() for e in entries])
        return
    if not entries:
        click.echo("nothing recorded")
    for entry in entries:
        click.echo(entry.line())


COMMANDS = (approve, reject, release, audit_command)
