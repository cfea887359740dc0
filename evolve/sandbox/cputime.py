"""CPU time of a candidate's whole process tree, measured on the trusted side (never reported by the candidate).

Two mechanisms, chosen per sandbox by whether the ``cgroup`` layer is in use:

* ``cgroup``: the kernel's accounting of the candidate's own cgroup (see ``cgroups``). Exact: every descendant counts,
  however it ended. Reading it costs one small file read (~20 us).
* ``proc`` (fallback where no cgroup can be created): live samples of the tree from ``/proc`` (each process's own
  and reaped children's times, plus the time of children that vanished without their parent collecting it), and at
  the end the ``wait4`` resource usage of the tree's roots, which includes every descendant that was waited for,
  orphans included (the namespace's init collects them). Weakness: a child that is auto-reaped (its parent ignores
  ``SIGCHLD``) and both starts and ends between two samples is never seen; samples are taken whenever the trusted
  side asks for the figure.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Protocol

from evolve.sandbox.cgroups import CandidateCgroup

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class CpuMeter(Protocol):
    """CPU seconds of one sandboxed process tree, as the trusted side measures them."""

    mechanism: str

    @property
    def needs_pids(self) -> bool:
        """Whether the meter still waits for the tree's pids (the monitor's ``spawned`` event)."""

    def spawned(self, pids: list[int]) -> None:
        """The host pids at the root of the tree."""

    def seconds(self) -> float:
        """CPU seconds so far (monotonic)."""

    def finish(self, exit_info: dict[str, object] | None) -> float:
        """The final figure once the tree is gone (``exit_info``: the monitor's exit report); frees resources."""


@dataclass
class CgroupMeter:
    cgroup: CandidateCgroup
    mechanism: str = "cgroup"
    _last: float = 0.0
    needs_pids: bool = False

    def spawned(self, pids: list[int]) -> None:
        pass  # the cgroup needs no pids: the tree joined it itself

    def seconds(self) -> float:
        if not self.cgroup.removed:
            with contextlib.suppress(OSError, ValueError):
                self._last = max(self._last, self.cgroup.usage())
        return self._last

    def finish(self, exit_info: dict[str, object] | None) -> float:
        final = self.seconds()
        self.cgroup.remove()
        return final


@dataclass(frozen=True)
class _Times:
    ppid: int
    own: float  # utime + stime of the process (all its threads)
    reaped: float  # cutime + cstime: children it waited for


def _read_times(pid: int) -> _Times | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    # fields[0] is field 3 (state): ppid 4, utime 14, stime 15, cutime 16, cstime 17
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return _Times(int(fields[1]), own, reaped)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                kids += [int(k) for k in fh.read().split()]
    return kids


def tree_times(roots: list[int]) -> dict[int, _Times]:
    """Times of every live (or zombie) process in the trees below ``roots``, roots included."""
    seen: dict[int, _Times] = {}
    frontier = list(roots)
    while frontier:
        pid = frontier.pop()
        if pid in seen:
            continue
        times = _read_times(pid)
        if times is None:
            continue
        seen[pid] = times
        frontier += _children(pid)
    return seen


@dataclass
class ProcMeter:
    """The fallback: samples the tree below ``roots`` (host pids, learnt from the monitor's ``spawned`` event)."""

    roots: list[int] = field(default_factory=list)
    mechanism: str = "proc"
    _last: dict[int, _Times] = field(default_factory=dict)
    _lost: float = 0.0  # time of processes that vanished without their parent collecting it
    _best: float = 0.0
    _final: float | None = None

    @property
    def needs_pids(self) -> bool:
        return not self.roots

    def spawned(self, pids: list[int]) -> None:
        self.roots = list(pids)

    def seconds(self) -> float:
        if self._final is not None or not self.roots:
            return self._best
        now = tree_times(self.roots)
        vanished: dict[int, float] = {}
        for pid, before in self._last.items():
            if pid not in now:
                vanished[before.ppid] = vanished.get(before.ppid, 0.0) + before.own + before.reaped
        for parent, expected in vanished.items():
            if parent in now and parent in self._last:  # a parent collects its child's time when it reaps it
                collected = now[parent].reaped - self._last[parent].reaped
                self._lost += max(0.0, expected - collected)
        self._last = now
        self._best = max(self._best, self._lost + sum(t.own + t.reaped for t in now.values()))
        return self._best

    def finish(self, exit_info: dict[str, object] | None) -> float:
        if self._final is None:
            reaped = (exit_info or {}).get("cpu")
            self._final = max(self._best, float(reaped) if isinstance(reaped, int | float) else 0.0)
            self._best = self._final
        return self._final
