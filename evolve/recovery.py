"""Turning what a dead writer left into segments, and compaction. Both refuse to touch damage unless told to.

Recovery converts each journal into a segment (skipping rows already written under the journal's stem, so it is
idempotent) and only then deletes the journal. A journal holding bad lines is damage: without an explicit
acceptance nothing is changed and ``ArchiveDamaged`` lists it; with one, its good rows are converted and the
journal itself is moved to ``RUN/damaged/journal/`` with a note, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evolve.damage import (
    Damage,
    RunInspection,
    first_per_key,
    journal_damage,
    journals_damage,
    quarantine,
    read_journals,
)
from evolve.journal import JOURNAL_SUFFIX, JournalContent
from evolve.segments import (
    EVENT_TABLE,
    JOURNAL_DIR,
    MIGRATION_TABLE,
    PROGRAM_TABLE,
    READ_ERRORS,
    SEGMENT_SUFFIX,
    TABLES,
    TableKind,
    describe_error,
    fsync_dir,
    ledger_retired,
    ledger_table,
    read_segment,
    relative,
    segment_files,
    write_parquet_atomic,
)

LOCK_FILE = ".lock"


class ArchiveLockedError(RuntimeError):
    """Another live process holds this run's writer lock."""


class ArchiveDamaged(RuntimeError):
    """The run holds damage that only an explicit acceptance may move aside. Nothing was changed."""

    def __init__(self, run_dir: Path, damage: Sequence[Damage]):
        self.run_dir = run_dir
        self.damage = list(damage)
        lines = "\n".join(f"  - {d.describe()}" for d in self.damage)
        super().__init__(f"{run_dir} holds damaged files:\n{lines}")


@dataclass(frozen=True)
class RecoveryReport:
    journals: int  # journal files found and converted (then deleted, or moved to damaged/ if they held bad lines)
    programs: int  # program rows written to new segments
    migrations: int  # migration rows written to new segments
    skipped_lines: int  # journal lines not converted: torn tails and bad lines
    duplicates: int  # journal rows already present in the matching segment (crash after flush)
    temp_files_removed: int  # temporary files abandoned by dead writers
    torn_tails: int = 0  # journals ending in an append cut short by a kill (never acknowledged: nothing lost)
    quarantined: tuple[str, ...] = ()  # files moved to damaged/ (relative to the run folder)
    events: int = 0  # event rows written to new segments


# ---------------------------------------------------------------------------------------------------------------
# Locking and leftovers


def lock_run(run_dir: Path) -> int:
    """Take the run's writer lock (released by the kernel if the holder dies, even by SIGKILL)."""
    journal_dir = run_dir / JOURNAL_DIR
    journal_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(journal_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ArchiveLockedError(f"{run_dir} is being written by another live process") from None
        raise
    return fd


def unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temps(directory: Path) -> int:
    removed = 0
    if not directory.is_dir():
        return 0
    for path in directory.iterdir():
        if not path.name.startswith(".") or ".tmp-" not in path.name:
            continue
        try:
            pid = int(path.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------------------------
# Recovery


def _existing_keys(directory: Path, stem: str, keys: list[str]) -> set[tuple[Any, ...]]:
    """Keys already written for a journal stem (its own segment and any earlier recovery parts)."""
    found: set[tuple[Any, ...]] = set()
    for path in segment_files(directory):
        if path.name == stem + SEGMENT_SUFFIX or path.name.startswith(stem + "-r"):
            try:
                table = pq.read_table(path, columns=keys)
            except READ_ERRORS:
                continue
            found.update(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    return found


def _free_name(directory: Path, stem: str) -> Path:
    candidate = directory / (stem + SEGMENT_SUFFIX)
    k = 1
    while candidate.exists():
        candidate = directory / f"{stem}-r{k}{SEGMENT_SUFFIX}"
        k += 1
    return candidate


def _convert(run_dir: Path, content: JournalContent) -> dict[str, int]:
    """Write a journal's rows not yet in a segment of its stem; rows written per table, and ``"duplicates"``."""
    stem = content.path.name[: -len(JOURNAL_SUFFIX)]
    counts = {"duplicates": 0}
    for table in TABLES:
        rows = content.of(table)
        counts[table.name] = 0
        if not rows:
            continue
        directory = run_dir / table.directory
        keys = list(table.key)
        seen = set(_existing_keys(directory, stem, keys))
        fresh = []
        for row in rows:
            key = tuple(row.get(k) for k in keys)
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            fresh.append(row)
        if fresh:
            directory.mkdir(parents=True, exist_ok=True)
            target = _free_name(directory, stem)
            written = table.table(fresh)
            write_parquet_atomic(written, target)
            ledger_table(run_dir, target, table, written)
            counts[table.name] += len(fresh)
    return counts


def recover_locked(run_dir: Path, accepted: RunInspection | None = None, note: dict[str, Any] | None = None
                   ) -> RecoveryReport:
    """Convert journals into segments (the caller holds the lock).

    Without ``accepted``, a journal with bad lines raises ``ArchiveDamaged`` before anything changes. With it (an
    inspection whose damage the user accepted), its good rows are converted and every damaged file it lists is
    moved to ``damaged/``.
    """
    journals = read_journals(run_dir)
    if accepted is None:
        damage = journals_damage(run_dir, journals)
        if damage:
            raise ArchiveDamaged(run_dir, damage)
    temps = sum(remove_dead_temps(run_dir / d) for d in (*(t.directory for t in TABLES), JOURNAL_DIR))
    quarantined: list[str] = []
    damage_by_file = {d.file: d for d in accepted.damage} if accepted is not None else {}
    counts: dict[str, int] = {}
    skipped = torn = 0
    for content in journals:
        for name, n in _convert(run_dir, content).items():
            counts[name] = counts.get(name, 0) + n
        skipped += content.bad_lines
        torn += int(content.torn_tail)
        damage = damage_by_file.pop(relative(run_dir, content.path), None)
        if damage is None:
            damage = journal_damage(run_dir, content)  # appeared after the inspection: still never deleted
        if damage is not None:
            moved = quarantine(run_dir, damage, note or {})
            quarantined.append(moved or damage.file)
        else:
            # Only now, its rows being in segments, is the journal redundant.
            content.path.unlink()
    for damage in damage_by_file.values():
        moved = quarantine(run_dir, damage, note or {})
        quarantined.append(moved or damage.file)
    if journals:
        fsync_dir(run_dir / JOURNAL_DIR)
    return RecoveryReport(len(journals), counts.get(PROGRAM_TABLE.name, 0), counts.get(MIGRATION_TABLE.name, 0),
                          skipped, counts.get("duplicates", 0), temps, torn, tuple(quarantined),
                          counts.get(EVENT_TABLE.name, 0))


def recover(run_dir: str | Path) -> RecoveryReport:
    """Convert journals left by dead writers into segments, then delete them. Idempotent.

    Raises ``ArchiveLockedError`` if a live writer holds the run (its journal is not abandoned), and
    ``ArchiveDamaged`` (changing nothing) if a journal holds lines that do not read back.
    """
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL_DIR).is_dir():
        return RecoveryReport(0, 0, 0, 0, 0, 0)  # nothing was ever journaled here
    fd = lock_run(run_dir)
    try:
        return recover_locked(run_dir)
    finally:
        unlock(fd)


# ---------------------------------------------------------------------------------------------------------------
# Compaction


@dataclass(frozen=True)
class CompactReport:
    merged_files: int  # small segments merged (and deleted)
    rows: int  # rows in the merged segment(s)
    bad_files: list[tuple[Path, str]] = field(default_factory=list)  # left untouched


def _compact_dir(run_dir: Path, kind: TableKind, small_rows: int) -> CompactReport:
    directory = run_dir / kind.directory
    small: list[Path] = []
    tables: list[pa.Table] = []
    bad: list[tuple[Path, str]] = []
    for path in segment_files(directory):
        try:
            if pq.ParquetFile(path).metadata.num_rows >= small_rows:
                continue
            table = read_segment(path, kind.schema, None, kind.id_column)
        except READ_ERRORS as exc:
            bad.append((path, describe_error(path, exc)))
            continue
        small.append(path)
        tables.append(table)
    if len(small) < 2:
        return CompactReport(0, 0, bad)
    merged = first_per_key(pa.concat_tables(tables), list(kind.key))
    # Named after the first part so it sorts where its rows were; a crash before the parts are deleted only
    # leaves duplicates, which readers drop.
    target = directory / f"{small[0].name[: -len(SEGMENT_SUFFIX)]}-c{len(small)}{SEGMENT_SUFFIX}"
    write_parquet_atomic(merged, target)
    ledger_table(run_dir, target, kind, merged)
    ledger_retired(run_dir, [p for p in small if p != target], "compacted", into=relative(run_dir, target))
    for path in small:
        if path != target:
            path.unlink()
    fsync_dir(directory)
    return CompactReport(len(small), merged.num_rows, bad)


def compact(run_dir: str | Path, small_rows: int = 1024) -> CompactReport:
    """Merge, per table (programs, migrations, events), every segment with fewer than ``small_rows`` rows into one."""
    run_dir = Path(run_dir)
    reports = [_compact_dir(run_dir, kind, small_rows) for kind in TABLES]
    return CompactReport(sum(r.merged_files for r in reports), sum(r.rows for r in reports),
                         [bad for r in reports for bad in r.bad_files])


def accepted_note(session: int, run_id: str) -> dict[str, Any]:
    return {"action": "moved here when the damage was accepted (evolve run --resume --accept-damage); never "
                      "deleted", "session": session, "run_id": run_id, "accepted_at": time.time()}
