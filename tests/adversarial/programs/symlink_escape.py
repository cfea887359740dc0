"""Attack: escape the scratch dir through symlinks and hard links to the evaluator and to /etc/shadow.

Contained: Landlock checks the real target, hard links to files outside are refused, and the uid cannot read them.
"""

import os


def run(data, context):
    succeeded = 0
    for i, target in enumerate((context["evaluator"], "/etc/shadow", "/root")):
        link = f"link{i}"
        try:
            os.symlink(target, link)
            if os.path.isdir(link):
                os.listdir(link)
            else:
                open(link).read(1)
            succeeded += 1
        except OSError:
            pass
        try:
            os.link(target, f"hard{i}")
            succeeded += 1
        except OSError:
            pass
    return {"answer": sorted(data), "report": {"succeeded": succeeded}}
