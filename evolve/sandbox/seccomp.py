"""A seccomp-BPF filter written by hand (no libseccomp needed): deny the calls a candidate has no use for.

Denied with EPERM: ptrace and the cross-process memory calls (``process_vm_readv``, ``pidfd_getfd``, ``kcmp``...),
namespace games (``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag), mounts, module loading, kexec, BPF,
perf events, keyrings, ``userfaultfd``, io_uring (its requests bypass seccomp), ``open_by_handle_at`` (escapes
path-based confinement), clock setting, reboot, and ``kill(-1, ...)`` (every process the caller may signal: without
a PID namespace and a uid of its own, the launcher's processes too), and ``sched_setaffinity`` (a candidate stays
on the cores its stage declared; threads and children inherit them). ``clone3`` gets ENOSYS because its flags live
in memory a filter cannot read; glibc then falls back to ``clone``, whose flags we can check.

Socket families are an allowlist in every configuration: ``socket()`` and ``socketpair()`` accept ``AF_UNIX``, plus
``AF_INET``/``AF_INET6`` inside an (empty) network namespace; anything else (``AF_VSOCK`` reaches the hypervisor
from any namespace, ``AF_PACKET``, ``AF_NETLINK``, ...) fails with EAFNOSUPPORT, as on a kernel without that family.
With ``deny_network`` (used when no network namespace is available) ``AF_INET``/``AF_INET6`` fail with EACCES.
Neither Python's start-up nor NumPy opens a socket; name lookups read ``/etc/hosts`` without one. x86-64 only: on
other architectures ``supported()`` is False and the layer is reported missing rather than half-applied.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import struct
from dataclasses import dataclass

from evolve.sandbox.syscalls import (
    MACHINE,
    NAMESPACE_FLAGS,
    PR_SET_SECCOMP,
    SECCOMP_MODE_FILTER,
    prctl,
    set_no_new_privs,
)

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000

# BPF opcodes (linux/bpf_common.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

# seccomp_data offsets: int nr; u32 arch; u64 ip; u64 args[6] (little endian: low word first)
_OFF_NR = 0
_OFF_ARCH = 4


def _off_arg_low(index: int) -> int:
    return 16 + 8 * index


X86_64_DENIED = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "adjtimex": 159, "chroot": 161, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "migrate_pages": 256, "unshare": 272, "move_pages": 279,
    "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "pivot_root": 155,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438, "process_madvise": 440,
    "mount_setattr": 442, "sched_setaffinity": 203,  # a candidate stays on the cores it was given
}
X86_64_CLONE = 56
X86_64_KILL = 62
X86_64_CLONE3 = 435
X86_64_SOCKET = 41
X86_64_SOCKETPAIR = 53
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10


def supported() -> bool:
    return MACHINE == "x86_64"


@dataclass(frozen=True)
class _Insn:
    code: int
    jt: int | str  # int offset or label name (resolved by the assembler)
    jf: int | str
    k: int


class _Program:
    """Tiny BPF assembler: forward jumps to named labels, resolved to relative offsets."""

    def __init__(self) -> None:
        self.insns: list[_Insn] = []
        self.labels: dict[str, int] = {}

    def add(self, code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        self.insns.append(_Insn(code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, insn in enumerate(self.insns):
            offsets = []
            for target in (insn.jt, insn.jf):
                if isinstance(target, str):
                    delta = self.labels[target] - index - 1
                    if not 0 <= delta <= 255:
                        raise ValueError(f"BPF jump to {target} out of range ({delta})")
                    offsets.append(delta)
                else:
                    offsets.append(target)
            out += struct.pack("<HBBI", insn.code, offsets[0], offsets[1], insn.k & 0xFFFFFFFF)
        return bytes(out)


@functools.cache
def build_filter(deny_network: bool = False) -> bytes:
    """The filter program for x86-64 as raw ``sock_filter`` bytes (built once per process: the fork server builds
    both variants before it forks, so that candidates only install them)."""
    p = _Program()
    p.add(_LD_W_ABS, _OFF_ARCH)
    p.add(_JEQ_K, AUDIT_ARCH_X86_64, 0, "wrong_arch")
    p.add(_LD_W_ABS, _OFF_NR)
    p.add(_JGE_K, X32_SYSCALL_BIT, "eperm", 0)
    for number in sorted(X86_64_DENIED.values()):
        p.add(_JEQ_K, number, "eperm", 0)
    p.add(_JEQ_K, X86_64_CLONE3, "enosys", 0)
    p.add(_JEQ_K, X86_64_CLONE, "clone", 0)
    p.add(_JEQ_K, X86_64_KILL, "kill", 0)
    p.add(_JEQ_K, X86_64_SOCKET, "socket", 0)
    p.add(_JEQ_K, X86_64_SOCKETPAIR, "socket", 0)
    p.add(_RET_K, RET_ALLOW)
    p.label("kill")
    p.add(_LD_W_ABS, _off_arg_low(0))
    p.add(_JEQ_K, 0xFFFFFFFF, "eperm", 0)  # kill(-1, ...): every process the caller may signal
    p.add(_RET_K, RET_ALLOW)
    p.label("clone")
    p.add(_LD_W_ABS, _off_arg_low(0))
    p.add(_JSET_K, NAMESPACE_FLAGS, "eperm", 0)
    p.add(_RET_K, RET_ALLOW)
    p.label("socket")  # the family is the first argument of socket() and socketpair()
    p.add(_LD_W_ABS, _off_arg_low(0))
    p.add(_JEQ_K, AF_UNIX, "allow", 0)
    p.add(_JEQ_K, AF_INET, "inet", 0)
    p.add(_JEQ_K, AF_INET6, "inet", "eafnosupport")
    p.label("inet")
    p.add(_RET_K, RET_ERRNO | errno.EACCES if deny_network else RET_ALLOW)
    p.label("allow")
    p.add(_RET_K, RET_ALLOW)
    p.label("eafnosupport")
    p.add(_RET_K, RET_ERRNO | errno.EAFNOSUPPORT)
    p.label("eperm")
    p.add(_RET_K, RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.add(_RET_K, RET_ERRNO | errno.ENOSYS)
    p.label("wrong_arch")
    p.add(_RET_K, RET_KILL_PROCESS)
    return p.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(deny_network: bool = False) -> None:
    """Install the filter on the calling thread (and everything it later forks or execs)."""
    if not supported():
        raise OSError(95, f"no seccomp syscall table for {MACHINE}")
    program = build_filter(deny_network)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    set_no_new_privs()
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
