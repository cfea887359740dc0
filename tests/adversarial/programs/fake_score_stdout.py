"""Attack: print fake scores on stdout and stderr. Contained: the evaluator never parses output; score unaffected."""

import json
import sys


def run(data, context):
    fake = {"score": 1e9, "sum_radii": 1e9, "ok": True}
    print(json.dumps(fake))
    print("score: 1000000000.0")
    print(json.dumps(fake), file=sys.stderr)
    sys.stdout.flush()
    return {"answer": sorted(data), "report": {}}
