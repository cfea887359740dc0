"""The sandbox: layered isolation for untrusted candidates, probed once per process.

Public API::

    config = SandboxConfig.from_table(problem.sections.get("sandbox"))   # [sandbox] table of problem.toml
    check_requirement(config)            # raises SandboxUnavailable naming the missing layer(s)
    print(describe_isolation(config))    # one line for the start banner
    sandbox = sandbox_for_problem(problem, config, stage)                # what run_stage uses
    sandbox.level                        # "session+rlimits+pidns+netns+mntns+landlock+seccomp+uid+cgroup"
    process = sandbox.spawn_python(scratch, timeout); process.cpu_seconds()   # CPU of its whole tree, trusted
"""

from __future__ import annotations

from pathlib import Path

from evolve.problem import Limits, Problem, StageSpec
from evolve.sandbox.config import Layer, SandboxConfig, SandboxConfigError, format_level, parse_layers
from evolve.sandbox.forkserver import ForkServerError, get_forkserver, shutdown_forkservers
from evolve.sandbox.launcher import (
    BasicSandbox,
    ChannelError,
    RunResult,
    Sandbox,
    SandboxProcess,
    SandboxSetupError,
    SandboxUnavailable,
    choose_layers,
    missing_layers,
    unavailable_reason,
)
from evolve.sandbox.probe import HostProbe


def make_sandbox(limits: Limits | None = None, config: SandboxConfig | None = None, *,
                 read_paths: tuple[str | Path, ...] = (), gpu: bool = False, cpus: float = 1.0) -> Sandbox:
    """A sandbox with every layer the host allows (restricted by ``config``); raises ``SandboxUnavailable``."""
    return Sandbox(limits, config, read_paths=read_paths, gpu=gpu, cpus=cpus)


def sandbox_for_problem(problem: Problem, config: SandboxConfig | None = None,
                        stage: StageSpec | None = None) -> Sandbox:
    """The sandbox for ``problem`` (its limits and ``read_paths``); GPU-aware when ``stage`` uses a GPU."""
    if config is None:
        config = SandboxConfig.from_table(problem.sections.get("sandbox"))
    read_paths = tuple(str((problem.root / rel).resolve()) for rel in problem.read_paths)
    return Sandbox(problem.limits, config, read_paths=read_paths, gpu=bool(stage and stage.gpus > 0),
                   cpus=stage.cpus if stage else 1.0)


def host_probe(config: SandboxConfig | None = None) -> HostProbe:
    """What this host allows (cached: probed once per process by the fork server)."""
    return get_forkserver((config or SandboxConfig()).preload).hello.probe


def check_requirement(config: SandboxConfig) -> str:
    """Raise ``SandboxUnavailable`` if ``config.require`` cannot be met here; return the level that will be used."""
    probe = host_probe(config)
    missing = missing_layers(probe, config)
    if missing:
        detail = "; ".join(f"{layer.value} ({why})" for layer, why in missing)
        raise SandboxUnavailable(f"sandbox.require = {config.require!r} cannot be met on this host: missing {detail}")
    return format_level(choose_layers(probe, config))


def describe_isolation(config: SandboxConfig | None = None) -> str:
    """One line for the start banner: the level candidates will run under, and what is missing and why."""
    config = config or SandboxConfig()
    server = get_forkserver(config.preload)
    probe = server.hello.probe
    chosen = choose_layers(probe, config)
    warm = config.warm and server.hello.warm_ok
    preloaded = ", ".join(server.hello.preloaded) or "nothing"
    mode = f"warm fork server, {preloaded} preloaded" if warm else "fresh interpreter per process"
    skipped = [layer for layer in (Layer.PIDNS, Layer.NETNS, Layer.MNTNS, Layer.LANDLOCK, Layer.SECCOMP, Layer.UID,
                                   Layer.CGROUP, Layer.SCRATCHFS)
               if layer not in chosen]
    text = f"sandbox: {format_level(chosen)} ({mode})"
    if skipped:
        text += "; without " + "; ".join(f"{layer.value} ({unavailable_reason(probe, layer)})" for layer in skipped)
    if Layer.CGROUP in chosen and probe.cgroup is not None and (slow := probe.cgroup.slow_joins()):
        text += f"; {slow}"
    return text


__all__ = [
    "BasicSandbox",
    "ChannelError",
    "ForkServerError",
    "HostProbe",
    "Layer",
    "RunResult",
    "Sandbox",
    "SandboxConfig",
    "SandboxConfigError",
    "SandboxProcess",
    "SandboxSetupError",
    "SandboxUnavailable",
    "check_requirement",
    "describe_isolation",
    "format_level",
    "host_probe",
    "make_sandbox",
    "parse_layers",
    "sandbox_for_problem",
    "shutdown_forkservers",
]
