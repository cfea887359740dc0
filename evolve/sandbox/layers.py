"""Which layers a sandbox uses: what the host allows (the probe), restricted by ``sandbox.layers``, with fallbacks
(``subreaper`` for ``pidns``, ``nonet`` for ``netns``, ``diskwatch`` for ``scratchfs``) and dependencies."""

from __future__ import annotations

from evolve.sandbox.config import Layer, SandboxConfig
from evolve.sandbox.probe import HostProbe


def choose_layers(probe: HostProbe, config: SandboxConfig) -> frozenset[Layer]:
    """The layers to use: what the host allows, restricted to ``config.layers``, with their dependencies."""
    have = set(probe.available())
    if not probe.root and Layer.USERNS not in have:  # a non-root launcher gets namespaces only through a user ns
        have -= {Layer.PIDNS, Layer.NETNS, Layer.MNTNS}
    restricted = config.allowed_layers is not None
    allowed = set(config.allowed_layers or tuple(Layer))

    def use(layer: Layer, fallback_for: Layer | None = None) -> bool:
        wanted = layer in allowed or (fallback_for is not None and fallback_for in allowed and not restricted)
        return layer in have and wanted

    chosen = {Layer.SESSION, Layer.RLIMITS}
    if use(Layer.PIDNS):
        chosen.add(Layer.PIDNS)
    elif use(Layer.SUBREAPER, Layer.PIDNS):
        chosen.add(Layer.SUBREAPER)
    if use(Layer.NETNS):
        chosen.add(Layer.NETNS)
    elif use(Layer.NONET, Layer.NETNS) and Layer.SECCOMP in allowed:
        chosen |= {Layer.NONET, Layer.SECCOMP}
    if use(Layer.MNTNS) and Layer.PIDNS in chosen:
        chosen.add(Layer.MNTNS)
    chosen |= {layer for layer in (Layer.LANDLOCK, Layer.SECCOMP, Layer.UID, Layer.CGROUP) if use(layer)}
    if use(Layer.SCRATCHFS):
        chosen.add(Layer.SCRATCHFS)
    elif use(Layer.DISKWATCH, Layer.SCRATCHFS):
        chosen.add(Layer.DISKWATCH)
    if not probe.root and chosen & {Layer.PIDNS, Layer.NETNS, Layer.MNTNS}:
        chosen.add(Layer.USERNS)
    if Layer.UID in chosen and probe.uid_needs_mntns and Layer.MNTNS not in chosen:
        chosen.discard(Layer.UID)  # the Python install is unreachable for another uid without the mount namespace
    return frozenset(chosen)


def unavailable_reason(probe: HostProbe, layer: Layer) -> str:
    """Why ``layer`` is not in use: the probe's reason, or the dependency or setting that excluded it."""
    if layer not in probe.available():
        return probe.why(layer)
    if layer is Layer.UID and probe.uid_needs_mntns:
        return "needs the mntns layer to expose the Python install to an unprivileged uid"
    if layer in (Layer.PIDNS, Layer.NETNS, Layer.MNTNS) and not probe.root and Layer.USERNS not in probe.available():
        return f"a non-root launcher needs a user namespace: {probe.why(Layer.USERNS)}"
    return "excluded by sandbox.layers or by a layer it depends on"


def missing_layers(probe: HostProbe, config: SandboxConfig) -> list[tuple[Layer, str]]:
    chosen = choose_layers(probe, config)
    return [(layer, unavailable_reason(probe, layer)) for layer in config.required_layers if layer not in chosen]


