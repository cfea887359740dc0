"""Host-wide leases on uids and CPU cores, so that concurrent candidates never share a uid and spread over cores.

Every launcher on the host (threads of one process, Ray workers, several runs) takes its leases in one directory
(``/run/evolve-sandbox`` for root), each lease an ``flock``-ed file: the kernel drops a lock when its last descriptor
closes, so a launcher that dies releases its leases without any cleanup. The fork server holds a duplicate of each
lease's descriptors while the candidate's processes may still exist (see ``ForkServer.track``): a lease is free only
once the candidate's tree is gone.

* uid ``u``: ``uid-<u>`` (removed on release, safely: a taker checks that the file it locked is still the one at the
  path). Tried at random over ``uid_base .. uid_base + uid_count``, so consecutive candidates rarely reuse a uid.
* core ``c``: ``cpu-<c>-<k>`` for k = 0, 1, ...: a taker first looks for cores with no lease (k = 0), then one lease
  (k = 1), and so on, starting at a random core, so that candidates spread over the cores the launcher may use.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass, field

ROOT_DIR = "/run/evolve-sandbox"
RANDOM_TRIES = 64
MAX_LEVEL = 4096  # more concurrent candidates per core than this is not a sandbox problem any more


class LeaseError(OSError):
    """No lease could be taken (every uid in the range is in use, or the lease directory is unusable)."""


def lease_dir() -> str:
    """This user's lease directory (created 0700; refused if someone else owns it or it is a symlink)."""
    uid = os.geteuid()
    candidates = [ROOT_DIR] if uid == 0 else []
    candidates.append(os.path.join(tempfile.gettempdir(), f"evolve-sandbox-leases-{uid}"))
    for path in candidates:
        with contextlib.suppress(OSError):
            os.mkdir(path, 0o700)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o022:
            return path
    raise LeaseError(f"no usable lease directory among {candidates}")


def _try_lock(path: str) -> int | None:
    """A descriptor holding an exclusive lock on ``path`` (the file at the path now), or None if it is taken."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # a releaser removed the file between our open and our lock: take the new one


@dataclass
class Lease:
    """The leases of one candidate: its uid (if any) and its cores. ``fds`` hold the locks."""

    uid: int | None = None
    cores: tuple[int, ...] = ()
    fds: list[int] = field(default_factory=list)
    _uid_path: str = ""

    def release(self) -> None:
        if self._uid_path:
            with contextlib.suppress(OSError):
                os.unlink(self._uid_path)  # still locked by us: nobody holds a lock on the file we remove
            self._uid_path = ""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def take_uid(lease: Lease, directory: str, base: int, count: int) -> None:
    """Lease a uid nobody else on the host holds."""
    tried: set[int] = set()
    start = secrets.randbelow(count)
    guesses = (secrets.randbelow(count) for _ in range(min(RANDOM_TRIES, count)))
    for slot in itertools.chain(guesses, ((start + i) % count for i in range(count))):
        if slot in tried:
            continue
        tried.add(slot)
        path = os.path.join(directory, f"uid-{base + slot}")
        fd = _try_lock(path)
        if fd is not None:
            lease.uid, lease._uid_path = base + slot, path
            lease.fds.append(fd)
            return
    raise LeaseError(f"all {count} sandbox uids from {base} are in use")


def take_cores(lease: Lease, directory: str, wanted: int, allowed: list[int]) -> None:
    """Lease ``wanted`` of the ``allowed`` cores, the least leased first."""
    wanted = max(1, min(wanted, len(allowed)))
    offset = secrets.randbelow(len(allowed))
    order = allowed[offset:] + allowed[:offset]
    chosen: list[int] = []
    for level in range(MAX_LEVEL):
        for core in order:
            if core in chosen:
                continue
            fd = _try_lock(os.path.join(directory, f"cpu-{core}-{level}"))
            if fd is None:
                continue
            lease.fds.append(fd)
            chosen.append(core)
            if len(chosen) == wanted:
                lease.cores = tuple(sorted(chosen))
                return
    lease.cores = tuple(sorted(set(chosen) | set(order[: wanted - len(chosen)])))
