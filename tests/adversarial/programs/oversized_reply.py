"""Attack: write a reply bigger than the trusted side's cap straight to the result channel (memory exhaustion of
the trusted process). Contained: reading stops at the cap, the candidate is killed: WRONG_OUTPUT."""

import os
import sys


def run(data, context):
    frame, request_id = sys._getframe(), None
    while frame is not None:
        request = frame.f_locals.get("request")
        if isinstance(request, dict) and "id" in request:
            request_id = request["id"]
        frame = frame.f_back
    head = b'{"ok": true, "id": "' + str(request_id).encode() + b'", "value": "'
    os.write(3, head)
    chunk = b"z" * (1 << 20)
    for _ in range(80):  # 80 MiB, more than the 64 MiB default cap
        os.write(3, chunk)
    os.write(3, b'"}\n')
    return {"answer": sorted(data), "report": {}}
