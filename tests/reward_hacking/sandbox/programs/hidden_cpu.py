"""Hides CPU work from every clock it can reach: burns at import time, patches the process's own clocks so that it
reports no time at all, and does the real work in forked helpers: one waited for, one double-forked (orphaned), one
auto-reaped (SIGCHLD ignored). ``run()`` returns only after every helper has burned its share, and claims 0 s."""

import os
import resource
import signal
import time

BURN = 0.3  # CPU seconds per piece of work: import, and each of the three helpers
_real_rusage = resource.getrusage


def _cpu() -> float:
    usage = _real_rusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _burn(seconds: float) -> None:
    end = _cpu() + seconds
    x = 0
    while _cpu() < end:
        for i in range(2000):
            x += i * i


_burn(BURN)  # import-time work

for _name in ("process_time", "perf_counter", "monotonic", "time", "thread_time"):
    setattr(time, _name, lambda: 0.0)
    setattr(time, _name + "_ns", lambda: 0)
os.times = lambda: os.times_result((0.0, 0.0, 0.0, 0.0, 0.0))
resource.getrusage = lambda who: resource.struct_rusage((0.0, 0.0) + (0,) * 14)


def _helper(done_w: int, orphan: bool = False) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        if orphan and os.fork():
            os._exit(0)  # the intermediate parent leaves at once: the worker is re-parented to the namespace's init
        _burn(BURN)
        os.write(done_w, b"x")
    finally:
        os._exit(0)


def _wait_for(done_r: int, count: int) -> int:
    got = b""
    while len(got) < count and (chunk := os.read(done_r, count - len(got))):
        got += chunk
    return len(got)


def run() -> dict:
    done_r, done_w = os.pipe()
    waited = _helper(done_w)
    intermediate = _helper(done_w, orphan=True)
    os.waitpid(intermediate, 0)
    done = _wait_for(done_r, 2)
    os.waitpid(waited, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the next helper is reaped by the kernel, its time uncollected
    _helper(done_w)
    os.close(done_w)
    done += _wait_for(done_r, 1)
    time.sleep(0.2)  # lets the auto-reaped helper finish exiting
    return {"helpers_done": done, "cpu_seconds": time.process_time() + os.times()[0]}
