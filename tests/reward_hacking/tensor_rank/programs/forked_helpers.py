"""Attack (needs the lint switched off): patch every clock of the process to read 0, fork helpers that burn CPU
(one of them a setsid daemon), and search forever: a search that "uses no time", as far as its own process can
tell, while its helpers work outside the process.

Contained: the budget is the kernel's count of the whole process tree, read on the trusted side; the tree is
killed when it is spent (which counts as giving up) and ``time_fraction`` reports what was really used.
"""

import os
import time

for _name in ("time", "perf_counter", "monotonic", "process_time", "thread_time"):
    setattr(time, _name, lambda: 0.0)
    setattr(time, _name + "_ns", lambda: 0)


def _burn():
    while True:
        pass


def search(tensor, shape, rank, seconds, rng, xp):
    for daemon in (False, False, True):
        if os.fork() == 0:
            if daemon:
                os.setsid()
                if os.fork() != 0:
                    os._exit(0)
            _burn()
    while True:
        try:
            _burn()
        except BaseException:  # noqa: BLE001 - the courtesy interruption is swallowed too
            continue
