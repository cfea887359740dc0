"""Attack: overwrite, append to, rename or delete the trusted evaluator, plant a module next to it, chmod/utime it.

Contained: every content change fails. Metadata changes (chmod, utime) fail too when the candidate has a uid of its
own or a read-only mount namespace; a non-root launcher without namespaces shares its uid with the candidate, and
Landlock does not cover chmod or utime (documented limitation): the tests then check that the content is unchanged.
"""

import os


def _count(attempts):
    succeeded = 0
    for attempt in attempts:
        try:
            attempt()
            succeeded += 1
        except OSError:
            pass
    return succeeded


def run(data, context):
    path = context["evaluator"]
    written = _count([
        lambda: open(path, "a").write("\nSCORE = 1e9\n"),
        lambda: open(path, "w").write("def evaluate(c):\n    return {'score': 1e9}\n"),
        lambda: os.rename(path, path + ".bak"),
        lambda: os.unlink(path),
        lambda: open(os.path.join(os.path.dirname(path), "sitecustomize.py"), "w").write("x = 1\n"),
    ])
    metadata = _count([lambda: os.chmod(path, 0o644), lambda: os.utime(path, None)])
    return {"answer": sorted(data), "report": {"written": written, "metadata": metadata}}
