"""``evolve ui [PATH]``: serve the local web view of one run, a problem's runs or the whole archive folder."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

DEFAULT_PORT = 8765
MIN_TOKEN = 16


@click.command("ui")
@click.argument("path", default="archive", required=False, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but a loopback address needs --token.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--token", default=None, help=f"Token that steering actions need ({MIN_TOKEN}+ characters); "
                                            "default: a random one, printed at start.")
@click.option("--no-pictures", is_flag=True, help="Do not run the problems' picture renderers.")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(0.2, 600),
              help="Seconds between the pages' checks for new rows.")
def ui(path: Path, host: str, port: int, token: str | None, no_pictures: bool, poll: float) -> None:
    """A live, local web view of runs: progress, MAP-Elites grids, genealogy, programs, diffs, failures, pictures,
    and steering (pin, ban, note) with the token.

    PATH is a run folder, a problem folder of the archive or the archive root (default: ./archive). Viewing is
    read-only and needs no token; steering actions do, even on 127.0.0.1.
    """
    try:
        from evolve.ui.server import UIServer, is_loopback
    except ImportError as exc:
        raise click.ClickException(f"evolve ui needs the ui extra ({exc.name} is missing): "
                                   'pip install -e ".[ui]"') from None
    if not path.exists():
        raise click.ClickException(f"{path}: no such folder (give a run folder, archive/<problem> or the archive)")
    local = is_loopback(host)
    if not local and not token:
        raise click.ClickException(
            f"binding to {host} lets other machines read every program and LLM answer in {path} and requires a "
            f"token for steering: pass --token TOKEN ({MIN_TOKEN}+ random characters), or bind to 127.0.0.1")
    if token is not None and len(token) < MIN_TOKEN:
        raise click.ClickException(f"--token must be at least {MIN_TOKEN} characters")
    token = token or secrets.token_urlsafe(18)
    try:
        server = UIServer(path, token=token, host=host, port=port, pictures=not no_pictures, poll_seconds=poll)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"evolve ui: {path.resolve()}")
    click.echo(f"  open   {server.url}/?token={token}")
    click.echo(f"  token  {token}  (steering actions need it; viewing does not)")
    if not local:
        click.echo(f"  warning: listening on {host}: anyone who reaches this port can read the archive", err=True)
    click.echo("  Ctrl-C stops the server.")
    server.run()
