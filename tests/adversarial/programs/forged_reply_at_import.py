"""Attack: write a forged "success" reply to the result channel while being imported, before any request.

Contained: nothing may arrive before a request, and replies must echo the request's random id: WRONG_OUTPUT.
"""

import json
import os

_forged = {"ok": True, "id": None, "value": {"answer": [], "report": {"score": 1e9}}}
for fd in range(3, 16):
    try:
        os.write(fd, (json.dumps(_forged) + "\n").encode())
    except OSError:
        pass


def run(data, context):
    return {"answer": sorted(data), "report": {}}
