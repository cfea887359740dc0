"""Attack: harvest environment variables: its own, and every /proc/<pid>/environ it can open.

Contained: the candidate's environment is an allowlist and the fork server was started with a clean one; other
processes' environments are out of reach. The evaluator checks the report for the trusted process's secret.
"""

import os


def run(data, context):
    found = [f"{k}={v}" for k, v in os.environ.items()]
    readable = 0
    me = str(os.getpid())
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = ["self"]
    for entry in entries:
        if entry.isdigit() or entry == "self":
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    found += fh.read().decode("utf-8", "replace").split("\0")
                    readable += entry not in ("self", me)
            except OSError:
                pass
    return {"answer": sorted(data), "report": {"foreign_environs": readable, "found": found[:500]}}
