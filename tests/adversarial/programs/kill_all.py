"""Attack: kill(-1, SIGKILL), i.e. every process it may signal. Contained: only its own processes are reachable.

Only ever fires inside a verified PID namespace under an unprivileged uid (the tests also skip without those
layers): as root on the host this kills every process on the machine. It forks a child first, so that the kill has
at least one legitimate victim and succeeds.
"""

import os
import signal
import time


def run(data, context):
    if os.getuid() == 0 or os.geteuid() == 0 or os.getpid() >= 100:
        return {"answer": sorted(data), "report": {"skipped": 1}}
    child = os.fork()
    if child == 0:
        time.sleep(3600)
        os._exit(0)
    try:
        os.kill(-1, signal.SIGKILL)
        fired = 1
    except OSError:
        fired = 0
        os.kill(child, signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    return {"answer": sorted(data), "report": {"fired": fired,
                                               "child_killed": fired and os.WIFSIGNALED(status)
                                               and os.WTERMSIG(status) == 9}}
