"""Sandbox settings and isolation levels.

An isolation level is the ``+``-joined list of layers a candidate ran under, in a fixed order, for example
``session+rlimits+pidns+netns+mntns+landlock+seccomp+uid+cgroup``. The archive's ``isolation`` column stores it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class Layer(StrEnum):
    """One isolation layer. Declaration order is the order of the level string."""

    SESSION = "session"  # new session and process group
    RLIMITS = "rlimits"  # CPU, memory, file size, open files, core 0, processes
    SUBREAPER = "subreaper"  # orphans come back to the monitor, which sweeps them (used without a PID namespace)
    PIDNS = "pidns"  # PID namespace: the candidate's tree dies with its init, daemons included
    USERNS = "userns"  # user namespace (non-root launchers need it for the other namespaces)
    NETNS = "netns"  # empty network namespace: no interface but a down loopback
    NONET = "nonet"  # no network namespace: seccomp allows AF_UNIX sockets only
    MNTNS = "mntns"  # mount namespace: private /proc, /tmp and /dev/shm
    LANDLOCK = "landlock"  # filesystem confinement, no TCP, signals and abstract sockets scoped
    SECCOMP = "seccomp"  # syscall filter: no ptrace, namespace games, mounts, cross-process memory
    UID = "uid"  # the candidate runs as a non-root uid (a fresh one per candidate when the launcher is root)
    CGROUP = "cgroup"  # the candidate's tree has a cgroup of its own: its CPU time is the kernel's accounting
    SCRATCHFS = "scratchfs"  # the scratch dir is a tmpfs of its own, capped in bytes and files
    DISKWATCH = "diskwatch"  # used instead of scratchfs: the monitor measures the scratch dir and kills over the cap


LAYER_ORDER = tuple(Layer)
REQUIRE_ENV = "EVOLVE_SANDBOX_REQUIRE"  # layers every run on this host must get, on top of the problem's require

# Aliases accepted by ``sandbox.require`` and ``sandbox.layers``.
ALIASES: dict[str, tuple[Layer, ...]] = {
    "basic": (Layer.SESSION, Layer.RLIMITS),
    "full": (Layer.SESSION, Layer.RLIMITS, Layer.PIDNS, Layer.NETNS, Layer.MNTNS, Layer.LANDLOCK, Layer.SECCOMP,
             Layer.UID, Layer.CGROUP, Layer.SCRATCHFS),
}


class SandboxConfigError(ValueError):
    """A ``[sandbox]`` setting is invalid."""


def parse_layers(spec: str | None) -> tuple[Layer, ...]:
    """``"session+rlimits+pidns"`` or an alias (``basic``, ``full``) to layers in canonical order."""
    if not spec:
        return ()
    chosen: set[Layer] = set()
    for token in spec.replace(",", "+").split("+"):
        token = token.strip().lower()
        if not token:
            continue
        if token in ALIASES:
            chosen.update(ALIASES[token])
            continue
        try:
            chosen.add(Layer(token))
        except ValueError:
            known = ", ".join([layer.value for layer in Layer] + list(ALIASES))
            raise SandboxConfigError(f"unknown sandbox layer {token!r} (known: {known})") from None
    return tuple(layer for layer in LAYER_ORDER if layer in chosen)


def format_level(layers: tuple[Layer, ...] | set[Layer] | frozenset[Layer]) -> str:
    return "+".join(layer.value for layer in LAYER_ORDER if layer in layers)


def level_satisfies(level: str, required: str) -> list[Layer]:
    """The layers of ``required`` that ``level`` lacks."""
    have = set(parse_layers(level))
    return [layer for layer in parse_layers(required) if layer not in have]


@dataclass(frozen=True)
class SandboxConfig:
    """How candidates are isolated. Built from ``problem.toml``'s ``[sandbox]`` table and CLI flags.

    require: layers (or an alias) without which the run refuses to start; ``""`` runs with what the host allows.
        ``$EVOLVE_SANDBOX_REQUIRE`` adds a floor set by the deployment (``cluster.yaml`` sets ``full``).
    layers: restrict to these layers (``""`` = every layer the host allows); for benchmarks and debugging.
    warm: Python candidates fork from a server that already imported ``preload`` (fast); False execs a fresh
        interpreter per candidate process.
    preload: modules the fork server imports once (never anything that starts threads or initialises CUDA).
    gpu: treat every process as a GPU process (otherwise decided per stage by its ``gpus``).
    allow_in_process: allow ``Candidate.run_evaluator_in_sandbox`` (evaluators in other engines' style whose code
        shares the candidate's process; results are marked ``in_process``).
    unprivileged_uid: uid for candidates when the launcher is root; None picks a fresh uid per candidate from
        ``uid_base``..``uid_base+uid_count`` so that the process limit binds per candidate.
    tmpfs_mb: size of the private /tmp and /dev/shm (mount namespace only).
    max_reply_mb: largest reply the trusted side reads from a candidate's result channel.
    max_reply_depth: deepest nesting of lists and dicts accepted in a reply, checked before it is parsed.
    """

    require: str = ""
    layers: str = ""
    warm: bool = True
    preload: tuple[str, ...] = ("numpy",)
    gpu: bool = False
    allow_in_process: bool = False
    unprivileged_uid: int | None = None
    uid_base: int = 1_900_000_000
    uid_count: int = 65536
    tmpfs_mb: int = 64
    max_reply_mb: int = 8
    max_reply_depth: int = 100

    def __post_init__(self) -> None:
        parse_layers(self.require)
        parse_layers(self.layers)
        if self.unprivileged_uid is not None and self.unprivileged_uid <= 0:
            raise SandboxConfigError("sandbox.unprivileged_uid must be a positive uid (not root)")
        for name in ("uid_count", "tmpfs_mb", "max_reply_mb", "max_reply_depth"):
            if getattr(self, name) <= 0:
                raise SandboxConfigError(f"sandbox.{name} must be > 0")

    @property
    def required_layers(self) -> tuple[Layer, ...]:
        return parse_layers(self.require)

    @property
    def allowed_layers(self) -> tuple[Layer, ...] | None:
        """Layers the user restricted the sandbox to, or None for no restriction."""
        return parse_layers(self.layers) or None

    @classmethod
    def from_table(cls, table: dict[str, Any] | None, **overrides: Any) -> SandboxConfig:
        """Build from a ``[sandbox]`` TOML table; unknown keys and wrong types raise ``SandboxConfigError``."""
        data = dict(table or {})
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise SandboxConfigError(f"sandbox.{key}: unknown key (allowed: {', '.join(sorted(known))})")
            default = known[key].default
            if key == "preload":
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise SandboxConfigError("sandbox.preload must be a list of module names")
                value = tuple(value)
            elif key == "unprivileged_uid":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise SandboxConfigError("sandbox.unprivileged_uid must be an integer")
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise SandboxConfigError(f"sandbox.{key} must be true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise SandboxConfigError(f"sandbox.{key} must be an integer")
            elif isinstance(default, str) and not isinstance(value, str):
                raise SandboxConfigError(f"sandbox.{key} must be a string")
            kwargs[key] = value
        if floor := os.environ.get(REQUIRE_ENV, "").strip():  # the deployment's floor (cluster.yaml sets "full")
            try:
                parse_layers(floor)
            except SandboxConfigError as exc:
                raise SandboxConfigError(f"{REQUIRE_ENV}={floor!r}: {exc}") from None
            kwargs["require"] = "+".join(spec for spec in (floor, kwargs.get("require", "")) if spec)
        return cls(**kwargs)
