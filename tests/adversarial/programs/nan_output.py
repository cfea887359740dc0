"""Attack: answer with NaNs (which compare false, and can slip through careless checks). Contained: WRONG_OUTPUT."""


def run(data, context):
    return {"answer": [float("nan")] * len(data), "report": {}}
