"""``evolve sandbox check``: which isolation level candidates get here, or on every node of a Ray cluster.

A run prints its level at start, but only for the machine it starts on; on a cluster the evaluations run on the
workers, whose hosts (bare metal, Docker with or without ``cluster.yaml``'s seccomp profile, Kubernetes) may allow
less. This command asks every alive node itself, with a zero-CPU task pinned to it, and fails when one misses the
requirement (the problem's ``[sandbox] require``, ``--require``, and the deployment's ``EVOLVE_SANDBOX_REQUIRE``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import click


@dataclass(frozen=True)
class NodeLevel:
    """The sandbox one host can give, against a requirement."""

    node: str  # Ray node id, or "local"
    host: str
    level: str
    description: str
    missing: dict[str, str] = field(default_factory=dict)  # required layer -> why it is unavailable
    error: str = ""  # the check itself failed (a bad config, a fork server that would not start)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.error


def check_here(table: dict[str, Any] | None, require: str | None, node: str = "local") -> NodeLevel:
    """The level this host gives for a ``[sandbox]`` table (and an extra requirement), never raising."""
    import socket

    from evolve.sandbox import SandboxConfig, describe_isolation, host_probe
    from evolve.sandbox.config import format_level
    from evolve.sandbox.layers import choose_layers, missing_layers

    host = socket.gethostname()
    try:
        config = SandboxConfig.from_table(table, require=require)
        probe = host_probe(config)
        return NodeLevel(node, host, format_level(choose_layers(probe, config)), describe_isolation(config),
                         {layer.value: why for layer, why in missing_layers(probe, config)})
    except Exception as exc:  # noqa: BLE001 - reported per node, as its own failure
        return NodeLevel(node, host, "", "", error=f"{type(exc).__name__}: {exc}")


def check_cluster(address: str, table: dict[str, Any] | None, require: str | None) -> list[NodeLevel]:
    """``check_here`` on every alive node of the Ray cluster at ``address``, each in a task pinned to its node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ours = not ray.is_initialized()  # a caller's connection (a notebook, a test) is used and kept
    if ours:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=0)(check_here)
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(table, require, node) for node in nodes]
        return list(ray.get(refs, timeout=300))
    finally:
        if ours:
            ray.shutdown()


@click.group()
def sandbox() -> None:
    """The sandbox candidates run in."""


@sandbox.command("check")
@click.argument("problem_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--require", "require", help="Layers every node must give, e.g. 'full' or 'pidns+landlock+uid' "
                                          "(on top of the problem's [sandbox] require).")
@click.option("--address", help="Check every node of this Ray cluster ('auto' for the local one) instead of here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per node.")
def check(problem_dir: str | None, require: str | None, address: str | None, as_json: bool) -> None:
    """Print the isolation level candidates get here (or on every node of a cluster); exit 1 if a node misses the
    requirement."""
    table: dict[str, Any] | None = None
    if problem_dir is not None:
        from evolve.openevolve import load_any_problem
        from evolve.problem import ProblemError

        try:
            problem, _ = load_any_problem(problem_dir)
        except ProblemError as exc:
            raise click.ClickException(str(exc)) from None
        table = problem.sections.get("sandbox")
    levels = check_cluster(address, table, require) if address else [check_here(table, require)]
    if as_json:
        click.echo(json.dumps([{**asdict(level), "ok": level.ok} for level in levels], indent=2))
    else:
        for level in levels:
            where = "this host" if level.node == "local" else f"node {level.node[:12]} ({level.host})"
            if level.error:
                click.echo(f"{where}: cannot check: {level.error}")
                continue
            click.echo(f"{where}: {level.description}")
            for layer, why in level.missing.items():
                click.echo(f"  missing required layer {layer}: {why}")
    bad = [level for level in levels if not level.ok]
    if bad:
        click.echo(f"{len(bad)} of {len(levels)} node(s) cannot give the required sandbox", err=True)
        sys.exit(1)


if __name__ == "__main__":
    sandbox()
