"""Which isolation layers this host allows, found by trying each one in a throwaway child once per process.

Docker's default seccomp profile and Ubuntu's AppArmor refuse user namespaces, some kernels lack Landlock, a
non-root launcher cannot change uid: each probe records *why* a layer is missing, so a run that requires it can say
so. The probe runs inside the fork server, the process that applies the layers for real.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from evolve.sandbox import cgroups, landlock, seccomp, syscalls
from evolve.sandbox.config import Layer
from evolve.sandbox.policy import missing_for_uid, python_roots

PROBE_UID = 1_899_999_999  # a uid nobody uses, only for the probe


@dataclass(frozen=True)
class LayerStatus:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class HostProbe:
    """Result of probing the host: one status per layer, plus facts the planner needs."""

    layers: dict[str, LayerStatus]
    root: bool
    landlock_abi: int
    python_roots: tuple[str, ...]
    uid_needs_mntns: bool = False  # another uid can reach the Python install only through mount-namespace covers
    cgroup: cgroups.CgroupLayout | None = None  # where candidate cgroups are created (the cgroup layer)

    def available(self) -> frozenset[Layer]:
        return frozenset(Layer(name) for name, status in self.layers.items() if status.ok)

    def why(self, layer: Layer) -> str:
        status = self.layers.get(layer.value)
        return status.detail if status else "not probed"

    def to_dict(self) -> dict[str, object]:
        return {"layers": {k: [v.ok, v.detail] for k, v in self.layers.items()}, "root": self.root,
                "landlock_abi": self.landlock_abi, "python_roots": list(self.python_roots),
                "uid_needs_mntns": self.uid_needs_mntns,
                "cgroup": self.cgroup.to_dict() if self.cgroup else None}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HostProbe:
        layers = {k: LayerStatus(bool(v[0]), str(v[1])) for k, v in dict(data["layers"]).items()}  # type: ignore[arg-type]
        return cls(layers=layers, root=bool(data["root"]), landlock_abi=int(data["landlock_abi"]),  # type: ignore[arg-type]
                   python_roots=tuple(data["python_roots"]),  # type: ignore[arg-type]
                   uid_needs_mntns=bool(data.get("uid_needs_mntns", False)),
                   cgroup=cgroups.CgroupLayout.from_dict(data["cgroup"]) if data.get("cgroup") else None)  # type: ignore[arg-type]


def _in_child(action: Callable[[], str]) -> LayerStatus:
    """Run ``action`` in a forked child; it returns a detail string or raises. Never affects this process."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            message = "ok:" + action()
        except BaseException as exc:  # noqa: BLE001
            message = f"no:{type(exc).__name__}: {exc}"
            if not isinstance(exc, OSError):
                message += " " + traceback.format_exc(limit=2).replace("\n", " | ")
            code = 1
        try:
            os.write(write_fd, message.encode("utf-8", "replace")[:4000])
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    if not text:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return LayerStatus(False, f"probe child died (signal {sig})" if sig else "probe child exited silently")
    return LayerStatus(text.startswith("ok:"), text[3:])


def _userns_flag(root: bool) -> int:
    return 0 if root else syscalls.CLONE_NEWUSER


def _unshare(flags: int, root: bool) -> None:
    from evolve.sandbox.trampoline import write_id_maps

    uid, gid = os.getuid(), os.getgid()
    syscalls.unshare(flags | _userns_flag(root))
    if not root:
        write_id_maps(uid, gid)


def _fork_check(check: Callable[[], bool], what: str) -> None:
    """Run ``check`` in a child (the first process of a new PID namespace); raise with its error if it fails."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            ok = check()
            os.write(write_fd, b"" if ok else b"returned False")
            os._exit(0 if ok else 1)
        except BaseException as exc:  # noqa: BLE001
            os.write(write_fd, f"{type(exc).__name__}: {exc}".encode()[:2000])
            os._exit(2)
    os.close(write_fd)
    detail = os.read(read_fd, 4096).decode("utf-8", "replace")
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(1, f"{what} failed in the new namespace: {detail or 'child died'}")


def probe_host() -> HostProbe:
    """Try every layer (takes a few milliseconds)."""
    root = os.geteuid() == 0
    abi = landlock.abi_version()
    roots = python_roots()
    layers: dict[str, LayerStatus] = {
        Layer.SESSION.value: LayerStatus(True, "setsid"),
        Layer.RLIMITS.value: LayerStatus(True, "setrlimit" + ("" if not root else "; RLIMIT_NPROC binds only with "
                                                                              "the uid layer")),
    }

    def subreaper() -> str:
        syscalls.set_child_subreaper()
        return "PR_SET_CHILD_SUBREAPER"

    layers[Layer.SUBREAPER.value] = _in_child(subreaper)

    def userns() -> str:
        if root:
            return "not needed: the launcher is root"
        _unshare(0, root)
        return "unprivileged user namespace"

    layers[Layer.USERNS.value] = _in_child(userns) if not root else LayerStatus(False, "not needed: launcher is root")

    def pidns() -> str:
        _unshare(syscalls.CLONE_NEWPID | syscalls.CLONE_NEWIPC, root)
        _fork_check(lambda: os.getpid() == 1, "pid 1")
        return "CLONE_NEWPID"

    layers[Layer.PIDNS.value] = _in_child(pidns)

    def netns() -> str:
        _unshare(syscalls.CLONE_NEWNET, root)
        return "CLONE_NEWNET"

    layers[Layer.NETNS.value] = _in_child(netns)

    def mntns() -> str:
        if not layers[Layer.PIDNS.value].ok:
            raise OSError(95, "needs the pidns layer (a private /proc)")
        _unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWPID, root)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)

        def mounts() -> bool:
            syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
            syscalls.mount("tmpfs", "/tmp", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=1m,mode=1777")
            syscalls.set_mount_read_only("/", recursive=True)  # mount_setattr: Linux 5.12+
            syscalls.set_mount_read_only("/tmp", read_only=False)
            return os.listdir("/tmp") == []

        _fork_check(mounts, "private /proc and /tmp, read-only host files (mount_setattr)")
        return "CLONE_NEWNS: private /proc, /tmp, /dev/shm; host files read-only"

    layers[Layer.MNTNS.value] = _in_child(mntns)

    def landlock_layer() -> str:
        ruleset = landlock.Ruleset(abi)
        ruleset.allow("/", landlock.READ_EXEC)
        ruleset.restrict_self()
        return f"ABI {abi}" + ("" if abi >= 6 else " (no signal scoping before ABI 6)") + \
            ("" if abi >= 4 else " (no TCP rules before ABI 4)")

    layers[Layer.LANDLOCK.value] = _in_child(landlock_layer) if abi >= 1 else \
        LayerStatus(False, "Landlock missing or disabled in this kernel (landlock_create_ruleset failed)")

    def seccomp_layer() -> str:
        seccomp.install(deny_network=True)
        try:
            syscalls.unshare(syscalls.CLONE_NEWNET)
        except OSError:
            return "BPF filter (x86-64)"
        raise OSError(1, "filter installed but unshare still allowed")

    layers[Layer.SECCOMP.value] = _in_child(seccomp_layer) if seccomp.supported() else \
        LayerStatus(False, f"no syscall table for {syscalls.MACHINE}")
    layers[Layer.NONET.value] = LayerStatus(
        layers[Layer.SECCOMP.value].ok, "socket() limited to AF_UNIX by seccomp" if layers[Layer.SECCOMP.value].ok
        else "needs the seccomp layer")

    def uid_layer() -> str:
        blocked = missing_for_uid(list(roots))
        if blocked and not layers[Layer.MNTNS.value].ok:
            raise OSError(13, f"an unprivileged uid cannot reach the Python install ({', '.join(blocked)}) and no "
                              "mount namespace is available to expose it")
        os.setgroups([])
        os.setresgid(PROBE_UID, PROBE_UID, PROBE_UID)
        os.setresuid(PROBE_UID, PROBE_UID, PROBE_UID)
        try:
            os.kill(1, 0)
        except PermissionError:
            return "fresh unprivileged uid per candidate" + (" (Python install exposed through mntns)"
                                                             if blocked else "")
        raise OSError(1, "an unprivileged uid could still signal init")

    if root:
        layers[Layer.UID.value] = _in_child(uid_layer)
    else:
        layers[Layer.UID.value] = LayerStatus(True, f"launcher is not root (uid {os.getuid()})")
    layout, detail = cgroups.probe()
    layers[Layer.CGROUP.value] = LayerStatus(layout is not None, detail if layout else
                                             f"no writable cgroup ({detail}); CPU time sampled from /proc instead")
    return HostProbe(layers=layers, root=root, landlock_abi=abi, python_roots=roots,
                     uid_needs_mntns=root and bool(missing_for_uid(list(roots))), cgroup=layout)

