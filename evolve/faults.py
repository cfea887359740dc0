"""Fail points: crash or fail the archive writer at an exact spot, for crash-consistency tests and benches.

``EVOLVE_FAILPOINTS="append:37"`` kills the process (SIGKILL, no clean-up) just before the 37th journal append of
the session; several are separated by commas. Points:

* ``append:N``: before the Nth row (program or migration) is journaled;
* ``torn:N``: after writing the first half of the Nth journal line (a torn tail, as a kill mid-``write`` leaves);
* ``segment:N``: after the Nth segment is renamed into place, before its journal is deleted;
* ``enospc:N``: the Nth journal write fails with ``ENOSPC`` (a full disk where no small filesystem can be mounted).

Unset (the normal case), every check is one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

_ENV = "EVOLVE_FAILPOINTS"


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        if name and count.strip().isdigit():
            points[name] = int(count)
    return points


_points = _parse(os.environ.get(_ENV, ""))
_hits: Counter[str] = Counter()


def armed(name: str) -> bool:
    """Count a pass through the point ``name``; True when this is the pass it names."""
    if name not in _points:
        return False
    _hits[name] += 1
    return _hits[name] == _points[name]


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def check(name: str) -> None:
    """Crash here if ``name`` is armed for this pass."""
    if armed(name):
        crash()


def enospc(path: str) -> None:
    if armed("enospc"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def reload() -> None:
    """Re-read the environment (tests that set it in-process)."""
    global _points
    _points = _parse(os.environ.get(_ENV, ""))
    _hits.clear()
