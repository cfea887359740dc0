"""Landlock filesystem and network confinement through the raw syscalls (no library needed).

A ruleset lists what the candidate may do beneath a few paths; everything else that the running kernel's Landlock ABI
can restrict is denied. ABI 4 adds TCP bind/connect rules (we allow none), ABI 5 device ioctls (allowed only on the
device nodes we list, e.g. ``/dev/nvidia*`` for GPU stages), ABI 6 scoping (no signals or abstract unix sockets
outside the candidate's own domain, so ``kill(-1)`` cannot reach the launcher even without a PID namespace).
Landlock also stops a sandboxed process from ptracing, and so from reading the memory of, any process outside its
domain.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from evolve.sandbox.syscalls import raw_syscall, set_no_new_privs

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = READ_FILE | READ_DIR
READ_EXEC = READ | EXECUTE
WRITE = (READ_EXEC | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_SYM
         | REFER | TRUNCATE)
DEVICE = READ_FILE | WRITE_FILE | IOCTL_DEV | TRUNCATE


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is missing or disabled."""
    try:
        return raw_syscall("landlock_create_ruleset", None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


@dataclass(frozen=True)
class Rule:
    """Access rights granted beneath ``path`` (a directory) or on ``path`` (a file)."""

    path: str
    access: int


class Ruleset:
    """A Landlock ruleset being built; ``restrict_self`` applies it to the calling process (and its future children)."""

    def __init__(self, abi: int, deny_tcp: bool = True, scope: bool = True):
        if abi < 1:
            raise OSError(95, "Landlock is not available on this kernel")
        self.abi = abi
        self.handled = handled_fs(abi)
        attr = _RulesetAttr(self.handled, 0, 0)
        size = 8
        if abi >= 4 and deny_tcp:
            attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
            size = 16
        if abi >= 6 and scope:
            attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            size = 24
        elif abi >= 4 and deny_tcp:
            size = 16
        self.fd = raw_syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
        self.skipped: list[str] = []

    def allow(self, path: str, access: int) -> bool:
        """Grant ``access`` beneath ``path``; a missing path is skipped (recorded in ``skipped``)."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            self.skipped.append(path)
            return False
        try:
            access &= self.handled
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= FILE_RIGHTS
            if access:
                rule = _PathBeneathAttr(access, fd)
                raw_syscall("landlock_add_rule", ctypes.c_int(self.fd), ctypes.c_int(_RULE_PATH_BENEATH),
                            ctypes.byref(rule), ctypes.c_uint32(0))
        finally:
            os.close(fd)
        return True

    def allow_all(self, rules: Iterable[Rule]) -> None:
        for rule in rules:
            self.allow(rule.path, rule.access)

    def restrict_self(self) -> None:
        """Enforce the ruleset on this process. Sets no_new_privs, which Landlock requires without CAP_SYS_ADMIN."""
        set_no_new_privs()
        try:
            raw_syscall("landlock_restrict_self", ctypes.c_int(self.fd), ctypes.c_uint32(0))
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
