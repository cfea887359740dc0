"""Attack: every process forks as fast as it can. Contained by RLIMIT_NPROC on the candidate's own uid.

Only ever detonates inside a verified PID namespace under an unprivileged uid (the tests also skip without those
layers): as root on the host this would take the machine down.
"""

import os
import time


def _contained():
    return os.getuid() != 0 and os.geteuid() != 0 and os.getpid() < 100


def run(data, context):
    if not _contained():
        return {"answer": sorted(data), "report": {"skipped": 1}}
    forks, blocked = 0, 0
    for _ in range(10_000):
        try:
            pid = os.fork()
        except OSError:
            blocked = 1
            break
        if pid == 0:
            # children keep multiplying until the limit stops them, then hold their slot
            for _ in range(10_000):
                try:
                    if os.fork() == 0:
                        continue
                except OSError:
                    break
            time.sleep(3600)
            os._exit(0)
        forks += 1
    return {"answer": sorted(data), "report": {"forks": forks, "blocked": blocked}}
