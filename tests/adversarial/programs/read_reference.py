"""Attack: read the problem's reference answer, its evaluator, and list the problem folder.

Contained: only the paths the problem lists in read_paths are readable (the public file is the positive control).
"""

import os


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


def run(data, context):
    found = []
    for path in (context["reference"], context["evaluator"]):
        text = _try(lambda p=path: open(p).read())
        if text is not None:
            found.append(text[:200])
    listing = _try(lambda: os.listdir(os.path.dirname(context["reference"]))) or []
    public = _try(lambda: open(context["public"]).read())
    via_symlink = _try(lambda: os.symlink(context["reference"], "ref_link") or open("ref_link").read())
    return {"answer": sorted(data), "report": {
        "read": len(found) + (via_symlink is not None), "listed": len({"reference.txt", "evaluator.py"} & set(listing)),
        "public_read": public is not None, "found": found + ([via_symlink] if via_symlink else [])}}
