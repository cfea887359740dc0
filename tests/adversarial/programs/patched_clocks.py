"""Attack: replace every clock in the process so that the call looks instantaneous, then take 0.5 s.

Contained: time is measured on the trusted side, from request to reply.
"""

import time

_sleep = time.sleep
_start = time.monotonic()
for _name in ("time", "perf_counter", "monotonic", "process_time", "thread_time"):
    setattr(time, _name, lambda: 0.0)
    setattr(time, _name + "_ns", lambda: 0)


def run(data, context):
    _sleep(0.5)
    return {"answer": sorted(data), "report": {"claimed_seconds": time.perf_counter()}}
