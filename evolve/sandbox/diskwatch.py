"""The ``diskwatch`` layer: where the scratch dir cannot be a size- and inode-capped filesystem of its own (a launcher
that may not mount), the candidate's monitor measures the dir every ``INTERVAL`` seconds and kills the tree once it
holds more than the caps. What it counts: the blocks allocated to every file below the scratch dir (hard links once),
every entry, and the blocks of deleted files the tree still holds open on the same filesystem (a candidate cannot
hide data by unlinking an open file). Its weakness against the ``scratchfs`` layer: it acts after the fact, so a fast
writer can overshoot by what it writes in one interval (each file is also capped by ``RLIMIT_FSIZE``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass

from evolve.sandbox.cputime import proc_listdir, tree_times

INTERVAL = 0.25  # seconds between two measurements


def usage(scratch: str, pids: list[int], stop_files: int, proc: int | None = None) -> tuple[int, int]:
    """(allocated bytes, entries) of the scratch dir and the deleted files ``pids`` hold open there. Stops counting
    entries past ``stop_files`` (an inode bomb must not make the count itself expensive). ``proc``: see
    ``cputime.proc_read``."""
    try:
        device = os.lstat(scratch).st_dev
    except OSError:
        return 0, 0
    seen: set[int] = set()
    used = files = 0
    stack = [scratch]
    while stack and files <= stop_files:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                files += 1
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_dev != device:
                    continue
                if info.st_ino not in seen:
                    seen.add(info.st_ino)
                    used += info.st_blocks * 512
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in proc_listdir(f"{pid}/fd", proc):
                with contextlib.suppress(OSError):
                    info = os.stat(f"{pid}/fd/{fd}" if proc is not None else f"/proc/{pid}/fd/{fd}", dir_fd=proc)
                    if (stat.S_ISREG(info.st_mode) and info.st_nlink == 0 and info.st_dev == device
                            and info.st_ino not in seen):
                        seen.add(info.st_ino)
                        used += info.st_blocks * 512
    return used, files


@dataclass
class Watch:
    """The monitor's watch over one scratch dir."""

    scratch: str
    max_bytes: int
    max_files: int
    due: float = 0.0
    report_fd: int = -1  # the candidate's stderr: where the reason for a kill goes
    proc: int | None = None  # the host's /proc, opened before the candidate's namespace mounted its own

    def timeout(self) -> float:
        return max(0.0, self.due - time.monotonic())

    def check(self, root: int) -> str:
        """An explanation if the scratch dir is over a cap ("" if not, or if the next check is not due yet).
        ``root``: the host pid of the tree's root."""
        if time.monotonic() < self.due:
            return ""
        self.due = time.monotonic() + INTERVAL
        used, files = usage(self.scratch, list(tree_times([root], self.proc)), self.max_files, self.proc)
        if used <= self.max_bytes and files <= self.max_files:
            return ""
        return (f"evolve sandbox: the scratch dir holds {used / 2**20:.0f} MB in {files} files, over its cap "
                f"({self.max_bytes / 2**20:.0f} MB, {self.max_files} files): process tree killed\n")
