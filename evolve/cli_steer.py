"""``evolve steer RUN pin|unpin|ban|unban PROGRAM`` and ``evolve steer RUN note TEXT``: steer a run while it goes."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from evolve.steering import SteeringError, SteeringState, append_action, make_action, read_state


def _who(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@click.group("steer", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(path_type=Path))
@click.pass_context
def steer(ctx: click.Context, run: Path) -> None:
    """Steer a run while it goes: pin a program as a preferred parent, ban one from breeding, add a note for later
    prompts. RUN is a run folder (or archive/<problem> for its newest run). Actions are appended to
    RUN/steering.jsonl; the running driver applies them within seconds, and a resumed run keeps them."""
    ctx.obj = run


def _record(run: Path, action: str, program: str, who: str | None) -> None:
    from evolve.ui.data import ArchiveQueryError, resolve_program  # DuckDB: loaded only when a command runs

    try:
        run_dir, full, status = resolve_program(run, program)
        if action == "pin" and status != "ok":
            raise click.ClickException(f"only a program that evaluated ok can be pinned as a parent; {full} is "
                                       f"{status}")
        recorded = append_action(run_dir, make_action(action, program_id=full, who=_who(who), source="cli"))
    except (ArchiveQueryError, SteeringError) as exc:  # RunNotFound, ProgramNotFound, AmbiguousProgram included
        raise click.ClickException(str(exc)) from None
    click.echo(f"{recorded.action.value} {full}: recorded in {run_dir / 'steering.jsonl'}")


def _program_command(action: str, doc: str) -> click.Command:
    @click.argument("program")
    @click.option("--who", default=None, help="Name recorded with the action (default: your user name).")
    @click.pass_obj
    def command(run: Path, program: str, who: str | None) -> None:
        _record(run, action, program, who)

    command.__doc__ = doc
    return steer.command(action)(command)


_program_command("pin", "Prefer PROGRAM (an id or unique prefix) as a parent.")
_program_command("unpin", "Stop preferring PROGRAM as a parent.")
_program_command("ban", "Never use PROGRAM as a parent or an inspiration again.")
_program_command("unban", "Lift a ban on PROGRAM.")


@steer.command("note")
@click.argument("text", nargs=-1, required=True)
@click.option("--who", default=None, help="Name recorded with the note (default: your user name).")
@click.pass_obj
def note(run: Path, text: tuple[str, ...], who: str | None) -> None:
    """Add a note (TEXT) that enters the prompts of later iterations."""
    from evolve.query import RunNotFound, resolve_run

    try:
        run_dir = resolve_run(run)
        recorded = append_action(run_dir, make_action("note", text=" ".join(text), who=_who(who), source="cli"))
    except (RunNotFound, SteeringError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"note recorded in {run_dir / 'steering.jsonl'}: {recorded.text}")


@steer.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the steering state as JSON.")
@click.pass_obj
def show(run: Path, as_json: bool) -> None:
    """Show what is pinned, banned and noted, and any damaged line of the steering log."""
    from evolve.query import RunNotFound, resolve_run

    try:
        state: SteeringState = read_state(resolve_run(run))
    except RunNotFound as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(state.to_json(), indent=2))
        return
    click.echo(f"pinned: {', '.join(state.pinned) or '-'}")
    click.echo(f"banned: {', '.join(sorted(state.banned)) or '-'}")
    for n in state.notes:
        click.echo(f"note ({n.who or '?'}): {n.text}")
    for d in state.damaged:
        click.echo(f"damaged line {d.line} (byte {d.offset}): {d.reason}", err=True)
    if state.incomplete_tail:
        click.echo(f"an incomplete last line of {state.incomplete_tail} bytes", err=True)
