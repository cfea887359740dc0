"""Attack: kill the trusted process, the fork server, its parent, its namespace's init, and their process groups.

Contained: they are invisible (PID namespace) or belong to another uid / Landlock domain: every kill fails.
(Inside a PID namespace whose parent lives outside, getppid() is 0: there is no visible parent to target.)
"""

import os
import signal


def run(data, context):
    succeeded = 0
    targets = {context["trusted_pid"], context["server_pid"], 1, os.getppid()} - {0, os.getpid()}
    for pid in targets:
        actions = [lambda p=pid: os.kill(p, signal.SIGKILL), lambda p=pid: os.kill(p, signal.SIGSTOP)]
        if pid > 1:  # killpg(1) is kill(-1): that attack has its own guarded program, kill_all.py
            actions.append(lambda p=pid: os.killpg(p, signal.SIGKILL))
        for action in actions:
            try:
                action()
                succeeded += 1
            except OSError:
                pass
    return {"answer": sorted(data), "report": {"succeeded": succeeded}}
