"""Tries to use more cores than its stage declared: widens its CPU affinity to every core, then keeps busy
processes (forked, so no GIL between them) and threads running on all of them for ``seconds`` of wall time."""

import errno
import os
import threading
import time


def _spin(until: float) -> None:
    x = 0
    while time.monotonic() < until:
        x += 1


def run(seconds: float = 1.0) -> dict:
    before = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        widened = "ok"
    except OSError as exc:
        widened = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    after = sorted(os.sched_getaffinity(0))
    start = time.monotonic()
    until = start + seconds
    pids = []
    for _ in range(2 * (os.cpu_count() or 1)):
        pid = os.fork()
        if pid == 0:
            _spin(until)
            os._exit(0)
        pids.append(pid)
    threads = [threading.Thread(target=_spin, args=(until,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    _spin(until)
    for thread in threads:
        thread.join()
    for pid in pids:
        os.waitpid(pid, 0)
    return {"before": before, "after": after, "widened": widened, "wall": time.monotonic() - start}
