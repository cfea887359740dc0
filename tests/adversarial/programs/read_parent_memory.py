"""Attack: read the trusted process's memory (/proc/<pid>/mem, process_vm_readv, ptrace) hunting for secrets.

Contained: the trusted process is outside the candidate's PID namespace, uid and Landlock domain, and seccomp
denies the calls: every attempt fails.
"""

import ctypes
import os


class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _read_mem(pid):
    try:
        with open(f"/proc/{pid}/maps") as fh:
            first = fh.readline().split()[0]
        start = int(first.split("-")[0], 16)
        with open(f"/proc/{pid}/mem", "rb") as fh:
            fh.seek(start)
            return fh.read(4096)
    except (OSError, ValueError, IndexError):
        return None


def run(data, context):
    libc = ctypes.CDLL(None, use_errno=True)
    targets = {context["trusted_pid"], context["server_pid"], os.getppid(), 1}
    succeeded = 0
    for pid in targets:
        if _read_mem(pid) is not None:
            succeeded += 1
        local = ctypes.create_string_buffer(64)
        liov = IOVec(ctypes.cast(local, ctypes.c_void_p), 64)
        riov = IOVec(ctypes.c_void_p(0x400000), 64)
        if libc.process_vm_readv(pid, ctypes.byref(liov), 1, ctypes.byref(riov), 1, 0) > 0:
            succeeded += 1
        if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
            succeeded += 1
    return {"answer": sorted(data), "report": {"succeeded": succeeded}}
