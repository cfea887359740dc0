"""Attack: during the call, steal the request id from the harness's frames and write a forged reply.

Contained: the forged reply is exactly what returning that data would do; the evaluator validates it and rejects the
bogus answer (WRONG_OUTPUT). The fake "score" in the report never becomes the score.
"""

import json
import os
import sys


def run(data, context):
    frame = sys._getframe()
    request_id = None
    while frame is not None:
        request = frame.f_locals.get("request")
        if isinstance(request, dict) and "id" in request:
            request_id = request["id"]
        frame = frame.f_back
    forged = {"ok": True, "id": request_id, "value": {"answer": [0.0] * len(data), "report": {"score": 1e9}}}
    os.write(3, (json.dumps(forged) + "\n").encode())
    return {"answer": sorted(data), "report": {}}
