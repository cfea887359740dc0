"""Attack: sleep for an hour (no CPU used, so CPU limits never fire). Contained by the wall-clock deadline."""

import time


def run(data, context):
    time.sleep(3600)
    return {"answer": sorted(data), "report": {}}
