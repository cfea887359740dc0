"""Attack: walk every frame and every object in the process looking for the expected answer / secret token.

Contained: the evaluator (and its secret) lives in another process; only harness frames are here.
"""

import gc
import sys


def _strings(obj, out, depth=0):
    if depth > 3:
        return
    if isinstance(obj, str):
        if "SECRET" in obj or "REFERENCE" in obj:
            out.append(obj[:200])
    elif isinstance(obj, dict):
        for key, value in list(obj.items())[:200]:
            _strings(key, out, depth + 1)
            _strings(value, out, depth + 1)
    elif isinstance(obj, list | tuple):
        for value in obj[:200]:
            _strings(value, out, depth + 1)


def run(data, context):
    found = []
    frame = sys._getframe()
    frames = 0
    while frame is not None:
        frames += 1
        _strings(dict(frame.f_locals), found)
        _strings(dict(frame.f_globals), found)
        frame = frame.f_back
    for obj in gc.get_objects():
        _strings(obj, found, 2)
    return {"answer": sorted(data), "report": {"frames": frames, "found": found[:50]}}
