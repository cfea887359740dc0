"""Attack: os._exit(0) while being imported (a clean exit code with no reply). Contained: a failed evaluation."""

import os

os._exit(0)


def run(data, context):
    return {"answer": sorted(data), "report": {}}
