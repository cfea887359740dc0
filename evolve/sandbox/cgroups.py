"""Per-candidate cgroups: the kernel's own CPU accounting for a candidate's whole process tree, and its cores.

A cgroup charges every CPU cycle of its members to itself, and a process's children are born in its cgroup: so the
usage of a candidate's cgroup covers the harness start-up, the candidate's import, threads, and every descendant,
whether it was reaped, orphaned, double-forked or auto-reaped (``SIGCHLD`` ignored). Nothing the candidate does to
its own clocks changes it, and the figure survives the processes (it is read after the tree is gone, then the cgroup
is removed). Where the controllers are available, the same cgroup confines the tree to its leased cores (``cpuset``)
and, for a fractional ``cpus``, to that share of a core (CFS quota).

Layouts found on Linux hosts:

* cgroup v2 (``cgroup2`` mount): ``cpu.stat``'s ``usage_usec`` exists in every cgroup, with or without controllers;
  ``cpuset`` and ``cpu`` only where they can be enabled for our subtree;
* cgroup v1: ``cpuacct.usage`` (nanoseconds) of the ``cpuacct`` hierarchy, and the ``cpuset`` and ``cpu``
  hierarchies (mounted separately or together);
* none writable (non-root without delegation, Docker without a writable cgroup mount): see ``cputime.ProcMeter``.

Candidate cgroups live in an ``evolve-sandbox`` directory below the launcher's own cgroup in each hierarchy, named
``<fork server pid>-<n>-<random>`` so that the cgroups of a fork server that was killed outright can be swept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from evolve.sandbox import syscalls

PARENT = "evolve-sandbox"
PRIVATE_MOUNT = "/run/evolve-sandbox-cgroup2"
REMOVE_TIMEOUT = 2.0  # seconds rmdir is retried while the last members finish exiting
CFS_PERIOD_US = 100_000
ACCT, CPUSET, QUOTA = "acct", "cpuset", "quota"
SLOW_JOIN_MS = 2.0  # a cgroup join slower than this is reported (``CgroupLayout.slow_joins``)
_counter = itertools.count()


class CgroupError(OSError):
    """A cgroup could not be created or configured (a host problem, never the candidate's fault)."""


@dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy we create candidate cgroups in.

    base: our ``evolve-sandbox`` directory in it; leave: the launcher's own ``cgroup.procs`` there (a monitor
    process moves itself back into it when its candidate's tree is gone); roles: what it is used for.
    """

    version: int
    base: str
    leave: str
    roles: frozenset[str]

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "base": self.base, "leave": self.leave, "roles": sorted(self.roles)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Hierarchy:
        return cls(int(data["version"]), str(data["base"]), str(data["leave"]),  # type: ignore[call-overload]
                   frozenset(data["roles"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class CgroupLayout:
    """Where this host lets us create candidate cgroups: the accounting hierarchy first.

    ``join_ms``: how long one process took to move itself into a candidate cgroup when probed. Without the
    ``favordynmods`` mount option, every move waits for an RCU grace period (measured 14 ms on a 2-core VM, against
    0.13 ms with it), and each candidate moves once per hierarchy before it runs: see ``slow_joins``."""

    hierarchies: tuple[Hierarchy, ...]
    join_ms: float = 0.0

    @property
    def accounting(self) -> Hierarchy:
        return self.hierarchies[0]

    def has(self, role: str) -> bool:
        return any(role in h.roles for h in self.hierarchies)

    @property
    def bases(self) -> tuple[str, ...]:
        return tuple(h.base for h in self.hierarchies)

    def describe(self) -> str:
        roles = [name for role, name in ((CPUSET, "cpuset"), (QUOTA, "CPU quota")) if self.has(role)]
        acct = self.accounting
        text = f"cgroup v{acct.version} CPU accounting in {acct.base}"
        return text + (f" (+{', '.join(roles)})" if roles else "")

    def slow_joins(self) -> str:
        """A hint when moving into a cgroup is slow enough to matter per candidate ("" otherwise)."""
        if self.join_ms < SLOW_JOIN_MS:
            return ""
        return (f"each candidate waits ~{self.join_ms * len(self.hierarchies):.0f} ms to join its cgroup"
                f"{'s' if len(self.hierarchies) > 1 else ''} (the kernel waits for an RCU grace period per move; "
                "remounting the cgroup2 mount with favordynmods, as root, removes the wait: see "
                "evolve/sandbox/README.md)")

    def to_dict(self) -> dict[str, object]:
        return {"hierarchies": [h.to_dict() for h in self.hierarchies], "join_ms": self.join_ms}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CgroupLayout:
        return cls(tuple(Hierarchy.from_dict(h) for h in data["hierarchies"]),  # type: ignore[attr-defined]
                   float(data.get("join_ms", 0.0)))  # type: ignore[arg-type]


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root within the hierarchy, fs type, super options) of every cgroup mount."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            pre, _, post = line.partition(" - ")
            fields, tail = pre.split(), post.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                found.append((fields[4].replace("\\040", " "), fields[3], tail[0], set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller (``""`` for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _own_dir(mount_point: str, mount_root: str, own: str) -> str:
    """The directory of this process's cgroup under a mount (the mount's own root if the path is not below it)."""
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        own = own[len(mount_root):] or "/"
    elif mount_root != "/":
        own = "/"
    path = os.path.join(mount_point, own.lstrip("/"))
    return path if os.path.isdir(path) else mount_point


def _hierarchy(version: int, mount_point: str, root: str, own: str, roles: set[str]) -> Hierarchy:
    own_dir = _own_dir(mount_point, root, own)
    return Hierarchy(version, os.path.join(own_dir, PARENT), os.path.join(own_dir, "cgroup.procs"), frozenset(roles))


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def accounting_candidates() -> list[Hierarchy]:
    """Accounting hierarchies to try, best first: v1 ``cpuacct`` (where the v1 controllers live), then v2."""
    own = _own_paths()
    v1 = [_hierarchy(1, m, r, own.get("cpuacct", "/"), {ACCT}) for m, r, t, o in _mounts()
          if t == "cgroup" and "cpuacct" in o]
    v2 = [_hierarchy(2, m, r, own.get("", "/"), {ACCT}) for m, r, t, _ in _mounts() if t == "cgroup2"]
    return v1 + v2


def _prepare_v1_cpuset(base: str) -> None:
    """A v1 cpuset cgroup takes no member before its cpus and mems are set: give our parent dir its parent's."""
    os.makedirs(base, exist_ok=True)
    parent = os.path.dirname(base)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(os.path.join(base, name)):
            _write(os.path.join(base, name), _read(os.path.join(parent, name)))


def _enable_v2(base: str, controllers: tuple[str, ...]) -> set[str]:
    """Enable ``controllers`` for the children of ``base`` (our own cgroup must delegate them first)."""
    os.makedirs(base, exist_ok=True)
    parent = os.path.dirname(base)
    enabled = set()
    for name in controllers:
        with contextlib.suppress(OSError):
            if name not in _read(os.path.join(parent, "cgroup.subtree_control")).split():
                _write(os.path.join(parent, "cgroup.subtree_control"), f"+{name}")  # EBUSY unless it is the root
            _write(os.path.join(base, "cgroup.subtree_control"), f"+{name}")
            enabled.add(name)
    return enabled


def control_candidates(accounting: Hierarchy) -> list[Hierarchy]:
    """Hierarchies that may confine the tree's cores (``cpuset``) and share of them (``cpu`` quota)."""
    if accounting.version == 2:
        enabled = _enable_v2(accounting.base, ("cpuset", "cpu"))
        roles = ({CPUSET} if "cpuset" in enabled else set()) | ({QUOTA} if "cpu" in enabled else set())
        return [dataclasses.replace(accounting, roles=frozenset(roles))]
    own = _own_paths()
    out = []
    for m, r, t, o in _mounts():
        if t == "cgroup" and ("cpuset" in o or "cpu" in o):
            roles = ({CPUSET} if "cpuset" in o else set()) | ({QUOTA} if "cpu" in o else set())
            out.append(_hierarchy(1, m, r, own.get("cpuset" if "cpuset" in o else "cpu", "/"), roles))
    return out


def read_usage(path: str, version: int) -> float:
    """CPU seconds (user + system) charged to the cgroup at ``path`` so far."""
    if version == 1:
        with open(os.path.join(path, "cpuacct.usage"), "rb") as fh:
            return int(fh.read()) / 1e9
    with open(os.path.join(path, "cpu.stat"), "rb") as fh:
        for line in fh:
            if line.startswith(b"usage_usec "):
                return int(line.split()[1]) / 1e6
    raise CgroupError(f"no usage_usec in {path}/cpu.stat")


def _cpu_list(cores: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cores)


@dataclass
class CandidateCgroup:
    """One candidate's cgroup in every hierarchy of the layout (created on the trusted side, joined by the process
    before it runs candidate code)."""

    layout: CgroupLayout
    paths: list[tuple[Hierarchy, str]] = field(default_factory=list)
    removed: bool = False

    @classmethod
    def create(cls, layout: CgroupLayout, owner_pid: int, cores: tuple[int, ...] = (),
               cpus: float | None = None) -> CandidateCgroup:
        """``cores``: confine the tree to them (where a cpuset is available); ``cpus``: a fractional share of them
        (CFS quota) when it is below their number."""
        name = f"{owner_pid}-{next(_counter)}-{secrets.token_hex(3)}"
        quota = cpus is not None and cores and 0 < cpus < len(cores)
        group = cls(layout)
        try:
            for hierarchy in layout.hierarchies:
                roles = hierarchy.roles
                if ACCT not in roles and not (CPUSET in roles and cores) and not (QUOTA in roles and quota):
                    continue
                os.makedirs(hierarchy.base, exist_ok=True)
                path = os.path.join(hierarchy.base, name)
                os.mkdir(path)
                group.paths.append((hierarchy, path))
                if CPUSET in roles and cores:
                    _write(os.path.join(path, "cpuset.cpus"), _cpu_list(cores))
                    if hierarchy.version == 1:
                        _write(os.path.join(path, "cpuset.mems"), _read(os.path.join(hierarchy.base, "cpuset.mems")))
                if QUOTA in roles and quota:
                    us = max(1000, int(float(cpus) * CFS_PERIOD_US))  # type: ignore[arg-type]
                    if hierarchy.version == 1:
                        _write(os.path.join(path, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                        _write(os.path.join(path, "cpu.cfs_quota_us"), str(us))
                    else:
                        _write(os.path.join(path, "cpu.max"), f"{us} {CFS_PERIOD_US}")
        except OSError as exc:
            group.remove(timeout=0)
            raise CgroupError(exc.errno, f"cannot set up a cgroup in {layout.accounting.base}: {exc.strerror}") \
                from None
        return group

    @property
    def procs(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a process writes itself into (accounting first)."""
        return tuple(os.path.join(path, "cgroup.procs") for _, path in self.paths)

    @property
    def leave(self) -> tuple[str, ...]:
        return tuple(h.leave for h, _ in self.paths)

    def usage(self) -> float:
        hierarchy, path = self.paths[0]
        return read_usage(path, hierarchy.version)

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> bool:
        """Remove the (empty) cgroups; members that are still exiting get ``timeout`` seconds. True when gone."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.paths:
            _, path = self.paths[-1]
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                return False
            self.paths.pop()
        self.removed = True
        return True


def join(procs: tuple[str, ...] | list[str]) -> None:
    """Move the calling process into the cgroups whose ``cgroup.procs`` are ``procs`` (its children follow)."""
    for path in procs:
        _write(path, "0")


def _burn_in_child(group: CandidateCgroup, seconds: float) -> float | None:
    """Seconds a child took to join ``group`` (then it burns ``seconds`` of CPU there); None if it could not."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            start = time.monotonic()
            join(group.procs)
            os.write(write_fd, struct.pack("d", time.monotonic() - start))
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        data = os.read(read_fd, 8)
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return struct.unpack("d", data)[0] if os.waitstatus_to_exitcode(status) == 0 and len(data) == 8 else None


def _works(accounting: Hierarchy, burn_seconds: float = 0.003) -> tuple[str, float]:
    """("", milliseconds one join took) if a cgroup can be created in ``accounting``, joined by a child, and read
    back with its CPU time; else (why not, 0)."""
    where = f"v{accounting.version} {accounting.base}"
    try:
        group = CandidateCgroup.create(CgroupLayout((accounting,)), os.getpid())
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}", 0.0
    try:
        joined = _burn_in_child(group, burn_seconds)
        if joined is None:
            return f"{where}: a child cannot join its cgroup", 0.0
        if group.usage() <= 0:
            return f"{where}: no CPU time accounted", 0.0
        return "", joined * 1000
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}", 0.0
    finally:
        group.remove()


def private_v2(path: str = PRIVATE_MOUNT) -> Hierarchy:
    """Our own cgroup2 mount, for a root launcher whose cgroup mount is read-only (a container's: Docker mounts
    /sys/fs/cgroup read-only). In a cgroup namespace it shows the container's own cgroup, where accounting needs no
    controller."""
    os.makedirs(path, 0o700, exist_ok=True)
    if not os.path.ismount(path):
        syscalls.mount("cgroup2", path, "cgroup2", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    return _hierarchy(2, path, "/", _own_paths().get("", "/"), {ACCT})


def probe() -> tuple[CgroupLayout | None, str]:
    """The first hierarchy where candidate cgroups work (a private cgroup2 mount as the last resort of a root
    launcher), with the cpuset and quota hierarchies that work next to it."""
    reasons = []
    for accounting in accounting_candidates():
        why, join_ms = _works(accounting)
        if not why:
            layout = dataclasses.replace(_with_controls(accounting), join_ms=join_ms)
            return layout, layout.describe()
        reasons.append(why)
    if os.geteuid() == 0:
        try:
            accounting = private_v2()
        except OSError as exc:
            reasons.append(f"private cgroup2 mount at {PRIVATE_MOUNT}: {exc.strerror or exc}")
        else:
            why, join_ms = _works(accounting)
            if not why:
                layout = CgroupLayout((accounting,), join_ms)
                return layout, layout.describe() + " (a private cgroup2 mount: the usual one is read-only)"
            reasons.append(why)
    return None, "; ".join(reasons) or "no cgroup mount"


def _with_controls(accounting: Hierarchy) -> CgroupLayout:
    """Add the cpuset and quota roles that really work (each tried once with a child) to the accounting layout."""
    chosen = [accounting]
    for candidate in control_candidates(accounting):
        for role in (CPUSET, QUOTA):
            if role not in candidate.roles or any(role in h.roles for h in chosen):
                continue
            trial = dataclasses.replace(candidate, roles=frozenset({role}))
            try:
                if role == CPUSET and trial.version == 1:
                    _prepare_v1_cpuset(trial.base)
                cores = tuple(sorted(os.sched_getaffinity(0)))[:1]
                group = CandidateCgroup.create(CgroupLayout((trial,)), os.getpid(), cores, 0.5)
            except OSError:
                continue
            try:
                works = _burn_in_child(group, 0.0) is not None
            finally:
                group.remove()
            if not works:
                continue
            same = [i for i, h in enumerate(chosen) if h.base == trial.base]
            if same:
                chosen[same[0]] = dataclasses.replace(chosen[same[0]], roles=chosen[same[0]].roles | {role})
            else:
                chosen.append(trial)
    return CgroupLayout(tuple(chosen))


def sweep_orphaned(layout: CgroupLayout) -> int:
    """Remove candidate cgroups of fork servers that no longer exist; returns how many were removed."""
    removed = 0
    for base in layout.bases:
        with contextlib.suppress(OSError):
            for entry in os.scandir(base):
                pid = entry.name.split("-", 1)[0]
                if entry.is_dir(follow_symlinks=False) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)
                        removed += 1
    return removed
