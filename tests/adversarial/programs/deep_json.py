"""Attack: a reply nested 200,000 levels deep, to crash the trusted side's JSON parser with a RecursionError.

Contained: the trusted side treats an unparsable reply as a protocol violation: WRONG_OUTPUT.
"""

import os
import sys


def run(data, context):
    frame, request_id = sys._getframe(), None
    while frame is not None:
        request = frame.f_locals.get("request")
        if isinstance(request, dict) and "id" in request:
            request_id = request["id"]
        frame = frame.f_back
    depth = 200_000
    payload = b'{"ok": true, "id": "' + str(request_id).encode() + b'", "value": ' + b"[" * depth + b"]" * depth + b"}\n"
    os.write(3, payload)
    os._exit(0)
