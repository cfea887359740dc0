"""Attack: return objects whose __eq__ is always true (a list subclass, a float subclass) holding wrong values.

Contained: only plain JSON data crosses the boundary; the trusted side compares plain floats: WRONG_OUTPUT.
"""


class AlwaysEqual(float):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = float.__hash__


class AlwaysEqualList(list):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False


def run(data, context):
    return {"answer": AlwaysEqualList(AlwaysEqual(0.0) for _ in data), "report": {}}
