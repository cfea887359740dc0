"""Attack: start threads without bound. Contained by RLIMIT_NPROC (threads are tasks) and the memory limit."""

import threading
import time


def run(data, context):
    started, blocked = 0, 0
    for _ in range(100_000):
        try:
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        except (RuntimeError, MemoryError):
            blocked = 1
            break
        started += 1
    return {"answer": sorted(data), "report": {"threads": started, "blocked": blocked}}
