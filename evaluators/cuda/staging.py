"""Copying harness files into a candidate's scratch directory before anything runs there.

The sandbox lets a candidate's processes read system folders, Python's own and their scratch directory, not this
repository; so the sources the compilers need and the scripts the sandbox runs are copied into a read-only
sub-folder of the scratch directory, fresh for every candidate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

STAGED = "evolve-harness"


def stage_files(scratch: Path, *files: Path, into: str = "") -> Path:
    """Copy ``files`` into ``scratch/evolve-harness`` (or its sub-folder ``into``) and return that harness folder.

    The copies are owned by the evaluator (when the sandbox runs candidates under another uid, they cannot change
    them; the sources of truth stay outside the sandbox's reach anyway)."""
    harness = scratch / STAGED
    harness.mkdir(mode=0o755, exist_ok=True)
    folder = harness / into if into else harness
    folder.mkdir(mode=0o755, exist_ok=True)
    for path in files:
        target = folder / path.name
        target.unlink(missing_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o444)
    return harness
