"""Per-candidate cgroups: the kernel's own CPU accounting for a candidate's whole process tree.

A cgroup charges every CPU cycle of its members to itself, and a process's children are born in its cgroup: so the
usage of a candidate's cgroup covers the harness start-up, the candidate's import, threads, and every descendant,
whether it was reaped, orphaned, double-forked or auto-reaped (``SIGCHLD`` ignored). Nothing the candidate does to
its own clocks changes it, and the figure survives the processes (it is read after the tree is gone, then the cgroup
is removed).

Layouts found on Linux hosts:

* cgroup v2 (``cgroup2`` mount): ``cpu.stat``'s ``usage_usec`` exists in every cgroup, with or without controllers;
* cgroup v1: the ``cpuacct`` hierarchy's ``cpuacct.usage`` (nanoseconds);
* none writable (non-root without delegation, Docker without a writable cgroup mount): see ``cputime.ProcMeter``.

Candidate cgroups live in an ``evolve-sandbox`` directory below the launcher's own cgroup in each hierarchy, named
``<fork server pid>-<n>-<random>`` so that the cgroups of a fork server that was killed outright can be swept.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

PARENT = "evolve-sandbox"
REMOVE_TIMEOUT = 2.0  # seconds rmdir is retried while the last members finish exiting
_counter = itertools.count()


class CgroupError(OSError):
    """A cgroup could not be created or configured (a host problem, never the candidate's fault)."""


@dataclass(frozen=True)
class CgroupLayout:
    """Where this host lets us create candidate cgroups.

    version: 1 or 2; base: the ``evolve-sandbox`` directory of the accounting hierarchy; leave: the launcher's own
    ``cgroup.procs`` there (a monitor process moves itself back into it when its candidate's tree is gone).
    """

    version: int
    base: str
    leave: str

    @property
    def usage_file(self) -> str:
        return "cpu.stat" if self.version == 2 else "cpuacct.usage"

    def describe(self) -> str:
        return f"cgroup v{self.version} CPU accounting in {self.base}"

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "base": self.base, "leave": self.leave}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CgroupLayout:
        return cls(version=int(data["version"]), base=str(data["base"]), leave=str(data["leave"]))  # type: ignore[call-overload]


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root within the hierarchy, fs type, super options) of every cgroup mount."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            pre, _, post = line.partition(" - ")
            fields, tail = pre.split(), post.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                mount_point = fields[4].replace("\\040", " ")
                found.append((mount_point, fields[3], tail[0], set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller list (``""`` for v2) -> this process's cgroup path, from /proc/self/cgroup."""
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


def candidate_layouts() -> list[CgroupLayout]:
    """Layouts to try, best first: v1 ``cpuacct`` (where the v1 controllers live), then v2 mounts."""
    own = _own_paths()
    out = []
    for mount_point, root, fstype, options in _mounts():
        if fstype == "cgroup" and "cpuacct" in options:
            own_dir = _own_dir(mount_point, root, own.get("cpuacct", "/"))
            out.append(CgroupLayout(1, os.path.join(own_dir, PARENT), os.path.join(own_dir, "cgroup.procs")))
    for mount_point, root, fstype, _ in _mounts():
        if fstype == "cgroup2":
            own_dir = _own_dir(mount_point, root, own.get("", "/"))
            out.append(CgroupLayout(2, os.path.join(own_dir, PARENT), os.path.join(own_dir, "cgroup.procs")))
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
    raise CgroupError(0, f"no usage_usec in {path}/cpu.stat")


@dataclass
class CandidateCgroup:
    """One candidate's cgroup (created on the trusted side, joined by the process before it runs candidate code)."""

    layout: CgroupLayout
    path: str
    removed: bool = False

    @classmethod
    def create(cls, layout: CgroupLayout, owner_pid: int) -> CandidateCgroup:
        try:
            os.makedirs(layout.base, exist_ok=True)
            path = os.path.join(layout.base, f"{owner_pid}-{next(_counter)}-{secrets.token_hex(3)}")
            os.mkdir(path)
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot create a cgroup in {layout.base}: {exc.strerror}") from None
        return cls(layout, path)

    @property
    def procs(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def usage(self) -> float:
        return read_usage(self.path, self.layout.version)

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> bool:
        """Remove the (empty) cgroup; members that are still exiting get ``timeout`` seconds. True when gone."""
        if self.removed:
            return True
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            try:
                os.rmdir(self.path)
            except FileNotFoundError:
                pass
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                return False
            self.removed = True
            return True


def join(procs: str) -> None:
    """Move the calling process into the cgroup whose ``cgroup.procs`` is ``procs`` (children follow)."""
    fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def probe(burn_seconds: float = 0.003) -> tuple[CgroupLayout | None, str]:
    """The first layout where a cgroup can be created, joined by a child, and read back with its CPU time."""
    reasons = []
    for layout in candidate_layouts():
        try:
            group = CandidateCgroup.create(layout, os.getpid())
        except OSError as exc:
            reasons.append(f"v{layout.version} {layout.base}: {exc.strerror or exc}")
            continue
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    join(group.procs)
                    end = time.process_time() + burn_seconds
                    while time.process_time() < end:
                        pass
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                reasons.append(f"v{layout.version} {layout.base}: a child cannot join its cgroup")
                continue
            if group.usage() <= 0:
                reasons.append(f"v{layout.version} {layout.base}: no CPU time accounted")
                continue
            return layout, layout.describe()
        except OSError as exc:
            reasons.append(f"v{layout.version} {layout.base}: {exc.strerror or exc}")
        finally:
            group.remove()
    return None, "; ".join(reasons) or "no cgroup mount"


def sweep_orphaned(layout: CgroupLayout) -> int:
    """Remove candidate cgroups of fork servers that no longer exist; returns how many were removed."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(layout.base):
            pid = entry.name.split("-", 1)[0]
            if entry.is_dir(follow_symlinks=False) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)
                    removed += 1
    return removed
