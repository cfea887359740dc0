"""``evolve ray start|stop|status``: one local Ray that every ``evolve run`` on this machine joins until it is stopped
(see ``evolve.ray_local``). The main group registers ``ray_group``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click


@click.group("ray")
def ray_group() -> None:
    """A local Ray kept running between runs: `evolve run` joins it (no Ray start per run) until `evolve ray
    stop`. `evolve run --address local` still starts a private instance."""


@ray_group.command("start")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs Ray may use (default: all of this machine's).")
@click.option("--dashboard", is_flag=True, help="Also start Ray's dashboard (its URL is printed).")
@click.option("--runner/--no-runner", default=True, show_default=True,
              help="Also start the warm runner: a process with evolve loaded and joined to this Ray, which "
                   "`evolve run` hands its run to (no imports, no new Ray workers per run).")
@click.option("--temp-dir", type=click.Path(file_okay=False), help="Ray's session folder (default "
              "/tmp/evolve-ray-UID); keep it short: Ray's unix sockets live in it (107 bytes at most).")
@click.option("--json", "as_json", is_flag=True, help="Print what was started as JSON.")
def start(num_cpus: int | None, dashboard: bool, runner: bool, temp_dir: str | None, as_json: bool) -> None:
    """Start a local Ray head in the background and record it for `evolve run`."""
    from evolve.ray_local import RayLocalError, is_running, read_cluster, start_cluster, state_path
    from evolve.runner import start_runner

    begun = time.monotonic()
    recorded = read_cluster()
    if runner and recorded is not None and is_running(recorded) and not _runner_ready(recorded):
        # The Ray runs but its runner does not (it exits when evolve's code changes): a new runner only.
        try:
            started = start_runner(recorded)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"the local Ray at {recorded.address} already runs; started its warm runner: pid {started.pid}, "
                   f"log {started.log}")
        return
    try:
        cluster = start_cluster(num_cpus, dashboard=dashboard, temp_dir=Path(temp_dir).absolute() if temp_dir else None)
    except RayLocalError as exc:
        raise click.ClickException(str(exc)) from None
    started, runner_error = None, ""
    if runner:
        try:
            started = start_runner(cluster)
        except RuntimeError as exc:
            runner_error = str(exc)  # the Ray is still worth keeping: runs then start their own drivers
    if as_json:
        click.echo(json.dumps(cluster.to_dict() | {"state_file": str(state_path()),
                                                    "runner": asdict(started) if started else None,
                                                    "runner_error": runner_error or None}, indent=2))
        return
    click.echo(f"started a local Ray in {time.monotonic() - begun:.1f} s: {cluster.address}, {cluster.num_cpus} CPUs, "
               f"pid {cluster.pid}, logs in {cluster.temp_dir}")
    if cluster.dashboard:
        click.echo(f"dashboard: {cluster.dashboard}")
    if started:
        click.echo(f"warm runner: pid {started.pid}, log {started.log}; `evolve run` hands it its runs "
                   f"(EVOLVE_NO_RUNNER=1: a driver per run)")
    if runner_error:
        click.echo(f"warning: {runner_error}\n(each `evolve run` starts its own driver)", err=True)
    click.echo("`evolve run` joins it from now on (--address local: a private instance); `evolve ray stop` ends it")


def _runner_ready(cluster: Any) -> bool:
    from evolve.runner import RunnerRecord

    record = RunnerRecord.read(cluster.temp_dir)
    return record is not None and record.ready()


@ray_group.command("stop")
@click.option("--json", "as_json", is_flag=True, help="Print what was stopped as JSON.")
def stop(as_json: bool) -> None:
    """Stop the local Ray started by `evolve ray start` (only that one; other Ray instances are left alone)."""
    from evolve.ray_local import read_cluster, stop_cluster
    from evolve.runner import stop_runner

    recorded = read_cluster()
    if recorded is not None:
        stop_runner(recorded.temp_dir)  # first: a run in it stops as on Ctrl-C, while its Ray still runs
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
    from evolve.runner import RunnerRecord, runner_status

    cluster = read_cluster()
    running = cluster is not None and is_running(cluster)
    runner = RunnerRecord.read(cluster.temp_dir) if cluster is not None and running else None
    runner = runner if runner is not None and runner.ready() else None
    said = runner_status(cluster.temp_dir) if cluster is not None and runner is not None else None
    if as_json:
        click.echo(json.dumps({"running": running, "state_file": str(state_path()),
                               "cluster": cluster.to_dict() if cluster else None,
                               "runner": asdict(runner) | (said or {}) if runner else None}, indent=2))
    elif cluster is None:
        click.echo("no local Ray from `evolve ray start`: each `evolve run` starts a private instance")
    elif not running:
        click.echo(f"the local Ray recorded at {cluster.address} is gone; the next `evolve run` removes the record")
    else:
        uptime = time.time() - cluster.started_at
        click.echo(f"running: {cluster.address}, {cluster.num_cpus} CPUs, pid {cluster.pid}, up {uptime:.0f} s"
                   + (f", dashboard {cluster.dashboard}" if cluster.dashboard else ""))
        state = ("not answering" if said is None else "running a run" if said.get("busy") else "idle") + (
            f", {said['runs']} run(s) served" if said else "")
        click.echo(f"warm runner: pid {runner.pid} ({state}), log {runner.log}" if runner else
                   "warm runner: none (each `evolve run` starts its own driver)")
    if not running:
        raise SystemExit(1)
