"""Attack: namespace and kernel games: new user namespace, setns, mount, chroot, ptrace, bpf, keyrings, io_uring.

Contained: seccomp denies each call (and the candidate holds no capabilities).
"""

import ctypes
import os

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000


def run(data, context):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    attempts = {
        "unshare_user": lambda: libc.unshare(CLONE_NEWUSER),
        "unshare_mnt": lambda: libc.unshare(CLONE_NEWNS),
        "setns": lambda: libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0),
        "mount": lambda: libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None),
        "chroot": lambda: libc.chroot(b"/tmp"),
        "ptrace_traceme": lambda: libc.ptrace(0, 0, 0, 0),
        "bpf": lambda: libc.syscall(321, 0, None, 0),
        "keyctl": lambda: libc.syscall(250, 0, 0, 0, 0, 0),
        "io_uring_setup": lambda: libc.syscall(425, 8, ctypes.create_string_buffer(120)),
        "userfaultfd": lambda: libc.syscall(323, 0),
        "clone_newuser": lambda: libc.syscall(56, CLONE_NEWUSER | 17, 0, 0, 0, 0),
    }
    succeeded = []
    for name, attempt in attempts.items():
        try:
            result = attempt()
        except OSError:
            continue
        if result is not None and result >= 0:
            if name == "clone_newuser" and result == 0:
                os._exit(0)  # we are the child of a successful clone
            succeeded.append(name)
    return {"answer": sorted(data), "report": {"succeeded": len(succeeded), "found": succeeded}}
