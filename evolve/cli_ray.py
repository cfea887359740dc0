"""``evolve ray start|stop|status``: one local Ray that every ``evolve run`` on this machine joins until it is stopped
(see ``evolve.ray_local``). The main group registers ``ray_group``."""

from __future__ import annotations

import json
import time

import click


@click.group("ray")
def ray_group() -> None:
    """A local Ray kept running between runs: `evolve run` joins it (no Ray start per run) until `evolve ray
    stop`. `evolve run --address local` still starts a private instance."""


@ray_group.command("start")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs Ray may use (default: all of this machine's).")
@click.option("--dashboard", is_flag=True, help="Also start Ray's dashboard (its URL is printed).")
@click.option("--json", "as_json", is_flag=True, help="Print what was started as JSON.")
def start(num_cpus: int | None, dashboard: bool, as_json: bool) -> None:
    """Start a local Ray head in the background and record it for `evolve run`."""
    from evolve.ray_local import RayLocalError, start_cluster, state_path

    begun = time.monotonic()
    try:
        cluster = start_cluster(num_cpus, dashboard=dashboard)
    except RayLocalError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(cluster.to_dict() | {"state_file": str(state_path())}, indent=2))
        return
    click.echo(f"started a local Ray in {time.monotonic() - begun:.1f} s: {cluster.address}, {cluster.num_cpus} CPUs, "
               f"pid {cluster.pid}, logs in {cluster.temp_dir}")
    if cluster.dashboard:
        click.echo(f"dashboard: {cluster.dashboard}")
    click.echo("`evolve run` joins it from now on (--address local: a private instance); `evolve ray stop` ends it")


@ray_group.command("stop")
@click.option("--json", "as_json", is_flag=True, help="Print what was stopped as JSON.")
def stop(as_json: bool) -> None:
    """Stop the local Ray started by `evolve ray start` (only that one; other Ray instances are left alone)."""
    from evolve.ray_local import stop_cluster

    cluster = stop_cluster()
    if as_json:
        click.echo(json.dumps({"stopped": cluster.to_dict() if cluster else None}, indent=2))
        return
    if cluster is None:
        click.echo("no local Ray from `evolve ray start` is recorded; nothing to stop")
        return
    click.echo(f"stopped the local Ray at {cluster.address} (pid {cluster.pid})")


@ray_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the record and whether it runs as JSON.")
def status(as_json: bool) -> None:
    """Whether a local Ray from `evolve ray start` runs (exit status 1 when none does)."""
    from evolve.ray_local import is_running, read_cluster, state_path

    cluster = read_cluster()
    running = cluster is not None and is_running(cluster)
    if as_json:
        click.echo(json.dumps({"running": running, "state_file": str(state_path()),
                               "cluster": cluster.to_dict() if cluster else None}, indent=2))
    elif cluster is None:
        click.echo("no local Ray from `evolve ray start`: each `evolve run` starts a private instance")
    elif not running:
        click.echo(f"the local Ray recorded at {cluster.address} is gone; the next `evolve run` removes the record")
    else:
        uptime = time.time() - cluster.started_at
        click.echo(f"running: {cluster.address}, {cluster.num_cpus} CPUs, pid {cluster.pid}, up {uptime:.0f} s"
                   + (f", dashboard {cluster.dashboard}" if cluster.dashboard else ""))
    if not running:
        raise SystemExit(1)
