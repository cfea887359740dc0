"""Attack: double-fork a setsid daemon that outlives the evaluation (escapes killpg of the candidate's group).

Contained: the PID namespace dies with its init (or the subreaper monitor sweeps every descendant).
The daemon execs `sleep 987654` so tests can find it by its command line.
"""

import os


def run(data, context):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            try:
                os.execvp("sleep", ["sleep", "987654"])
            finally:
                os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
    return {"answer": sorted(data), "report": {"daemonized": 1}}
