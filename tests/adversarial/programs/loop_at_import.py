"""Attack: spin forever while being imported. Contained by the stage deadline: TIMEOUT, process tree killed."""

while True:
    pass


def run(data, context):
    return {"answer": sorted(data), "report": {}}
