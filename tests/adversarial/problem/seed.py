"""An honest candidate: sorts its input and reports nothing."""


def run(data, context):
    return {"answer": sorted(data), "report": {}}
