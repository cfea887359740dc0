"""Attack: crash the interpreter with a segfault through ctypes. Contained: RUNTIME_ERROR naming signal 11."""

import ctypes


def run(data, context):
    ctypes.string_at(0)
    return {"answer": sorted(data), "report": {}}
