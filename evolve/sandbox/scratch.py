"""Scratch dirs on the host: the capped tmpfs of the ``scratchfs`` layer, and removing what candidates leave behind.

Layout of one scratch area (``Sandbox.make_scratch`` returns ``work``)::

    /tmp/evolve-sbx-<server pid>-XXXX/   root-owned 0711: the candidate can pass through, not list
        work/                            the candidate's cwd, HOME and TMPDIR; owned by the candidate's uid
                                         (scratchfs: a tmpfs of its own, capped in bytes and files)
        N.stdout, N.stderr               captured output of process N, written through descriptors only
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from evolve.sandbox import syscalls
from evolve.sandbox.policy import files_for

SCRATCH_PREFIX = "evolve-sbx-"  # + the fork server's pid: see sweep_orphaned_scratch
ORPHAN_MIN_AGE = 60.0  # seconds; a scratch dir younger than this is never swept


def mount_scratch(work: Path, mb: int, owner: int) -> None:
    """A tmpfs of ``mb`` MB (and ``files_for(mb)`` inodes) at ``work``, in the launcher's mount namespace: the trusted
    side reads and writes it as before, and the candidate's mount namespace gets it at the same path."""
    syscalls.mount("tmpfs", str(work), "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV,
                   f"size={mb}m,nr_inodes={files_for(mb)},mode=0700,uid={owner},gid={owner}")


def unmount_scratch(work: Path) -> None:
    """Detach a scratch tmpfs (``scratchfs``), so that removing the dir removes nothing below another mount."""
    if os.path.ismount(work):
        try:
            syscalls.umount(str(work))  # its processes are gone; a plain umount is several times faster than a lazy one
        except OSError:
            with contextlib.suppress(OSError):
                syscalls.umount(str(work), syscalls.MNT_DETACH)


def sweep_orphaned_scratch(directory: str | None = None) -> int:
    """Remove scratch dirs left by fork servers that were killed outright (Ray kills a dead worker's children).

    A server removes the scratch dirs of its trusted process when that process dies, but not when it is itself
    SIGKILLed. Its pid is in the dir's name: once that pid is gone (and the dir is a minute old), so are all the
    candidates that used it. Returns how many dirs were removed.
    """
    removed = 0
    now = time.time()
    for entry in Path(directory or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = entry.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            if now - entry.lstat().st_mtime > ORPHAN_MIN_AGE and entry.is_dir() and not entry.is_symlink():
                unmount_scratch(entry / "work")
                remove_tree(entry)
                removed += 1
    return removed


def remove_tree(path: Path) -> None:
    """Remove a tree the candidate may have made hard to remove (0000 dirs, read-only files) as a non-root user."""
    if _remove_flat(path):
        return
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        _make_removable(path)
        shutil.rmtree(path, ignore_errors=True)


def _remove_flat(path: Path) -> bool:
    """The usual scratch area after its tmpfs is unmounted: files and empty dirs only, removed with a handful of
    calls (shutil's walk costs several times more). False, with whatever is left, as soon as anything is not flat.

    Entries are removed relative to the directory opened without following a symlink (as shutil.rmtree does): a
    path swapped for a symlink meanwhile (the orphan sweep runs over the shared temp dir) never leads elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.name, dir_fd=fd)
                else:
                    os.unlink(entry.name, dir_fd=fd)
        os.rmdir(path)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _make_removable(path: Path | str, dir_fd: int | None = None) -> None:
    """Give the owner rwx on ``path`` and every directory below it, never through a symlink: each directory is opened
    with O_NOFOLLOW relative to its parent's descriptor (one swapped for a symlink meanwhile is left alone) and
    changed through that descriptor (an O_PATH one, which a 0000 directory allows; its /proc link is the inode)."""
    try:
        handle = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return
    try:
        os.chmod(f"/proc/self/fd/{handle}", stat.S_IRWXU)
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=handle)
        try:
            with os.scandir(listing) as entries:
                names = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
            for name in names:
                _make_removable(name, dir_fd=listing)
        finally:
            os.close(listing)
    except OSError:
        pass
    finally:
        os.close(handle)


