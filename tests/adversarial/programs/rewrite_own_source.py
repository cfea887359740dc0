"""Attack: rewrite its own source file so that a later process (a restart, a later stage) runs different code.

Contained: the trusted side rewrites the file from its own copy before every process; the archive keeps the
trusted copy. The second process therefore runs this original code again and reports that it saw no tampering.
"""

import os

TAMPERED = "def run(data, context):\n    return {'answer': 'TAMPERED', 'report': {'tampered': 1}}\n"


def run(data, context):
    path = os.path.abspath(__file__)
    rewrote = 0
    try:
        os.unlink(path)
        with open(path, "w") as fh:
            fh.write(TAMPERED)
        rewrote = 1
    except OSError:
        pass
    return {"answer": sorted(data), "report": {"rewrote": rewrote, "tampered": 0}}
