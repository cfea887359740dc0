"""When a run changed, from a few ``stat``/``listdir`` calls: the UI's cue to reopen a run and drop its cached
answers."""

from __future__ import annotations

import hashlib
import os
from contextlib import suppress
from pathlib import Path

from evolve.segments import TABLES, segment_files


def fingerprint(run_dir: Path) -> str:
    """Changes whenever the run's rows can have changed; a few ``listdir``/``stat`` calls."""
    parts: list[str] = []
    for table in TABLES:
        try:
            names = [f.name for f in segment_files(run_dir / table.directory)]
        except OSError:
            names = []
        parts.append(hashlib.blake2b("\n".join(names).encode(), digest_size=8).hexdigest())
    try:
        with os.scandir(run_dir / "journal") as entries:
            parts += sorted(f"{e.name}:{e.stat().st_size}" for e in entries if e.name.endswith(".jsonl"))
    except OSError:
        pass
    for name in ("run.json", "stats.json"):
        try:
            st = os.stat(run_dir / name)
            parts.append(f"{name}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append(f"{name}:-")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def last_write(run_dir: Path) -> float | None:
    """Newest modification time among the run's journal, newest segment and stats file."""
    times = []
    with suppress(OSError), os.scandir(run_dir / "journal") as entries:
        times += [e.stat().st_mtime for e in entries if e.name.endswith(".jsonl")]
    with suppress(OSError, ValueError):  # segment names sort in write order: the newest is the last
        newest = max(n for n in os.listdir(run_dir / "segments") if n.endswith(".parquet") and n[0] != ".")
        times.append(os.stat(run_dir / "segments" / newest).st_mtime)
    for name in ("stats.json", "run.json"):
        with suppress(OSError):
            times.append(os.stat(run_dir / name).st_mtime)
    return max(times) if times else None


def steering_mark(run_dir: Path) -> tuple[int, int]:
    """Changes when the steering log grows (its actions are part of the audit trail)."""
    try:
        st = os.stat(run_dir / "steering.jsonl")
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)
