"""The run archive on disk: append-only, immutable Parquet segments plus a per-session journal.

Durability has two tiers so that nothing is lost and the driver stays cheap:

* ``ArchiveWriter.append`` (and ``record_migration``, ``record_event``) writes one checksummed JSON line to the
  session's journal file with a single unbuffered ``os.write`` before returning. The kernel owns those bytes from
  then on, so the record survives a SIGKILL of the process (not a power cut: that would need an fsync per record,
  which the spec trades away).
* Rows are also buffered in memory and written in batches as one immutable Parquet segment per table
  (``evolve.segments.TABLES``: programs, migrations, events), recorded in the run's ledger; the journal file that
  covered those rows is then deleted and the next append starts a new one. The segment and its journal share a
  stem, which makes recovery idempotent.

Recovery (``evolve.recovery``, run by every writer on open) turns journals left by a dead writer into segments, and
refuses to touch damage unless the user accepted it (``evolve.damage``). Readers skip files that do not read back
with a warning naming them, read live journals too, and deduplicate by each table's key (``program_id`` for
programs), so a crash between a segment's rename and its journal's deletion never yields a duplicate row.

A write that fails (a full disk, a failing device) raises ``ArchiveIOError``, naming the file and the free space;
every row acknowledged before it stays readable. Each writer keeps a small reserve file so that, on a full disk,
the last row and the run's final state still fit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evolve import faults
from evolve.damage import RunInspection, dedup_sorted, read_journals, read_segments
from evolve.journal import JOURNAL_SUFFIX, encode_line
from evolve.query_index import to_arrow
from evolve.ranges import format_ranges
from evolve.recovery import (
    LOCK_FILE,
    ArchiveDamaged,
    ArchiveLockedError,
    CompactReport,
    RecoveryReport,
    compact,
    lock_run,
    recover,
    recover_locked,
    unlock,
)
from evolve.run_info import (
    PROBLEM_SNAPSHOT,
    RUN_INFO,
    STATS_FILE,
    list_runs,
    load_run_info,
    write_run_info,
)
from evolve.schema import ARCHIVE_SCHEMA, ProgramRecord
from evolve.segments import (
    COMPRESSION,
    EVENT_KEY,
    EVENT_SCHEMA,
    EVENT_TABLE,
    EVENTS_DIR,
    JOURNAL_DIR,
    MIGRATION_SCHEMA,
    MIGRATION_TABLE,
    MIGRATIONS_DIR,
    PROGRAM_TABLE,
    SEGMENT_SUFFIX,
    SEGMENTS_DIR,
    TABLES,
    TableKind,
    conform,
    ledger_table,
    write_json_atomic,
    write_parquet_atomic,
)

RESERVE_FILE = ".reserve"
RESERVE_BYTES = 256 * 1024  # room for the final run.json, stats.json and a last row once the disk is full

__all__ = [
    "COMPRESSION", "EVENTS_DIR", "EVENT_KEY", "EVENT_SCHEMA", "JOURNAL_DIR", "JOURNAL_SUFFIX", "LOCK_FILE",
    "MIGRATIONS_DIR", "MIGRATION_SCHEMA", "PROBLEM_SNAPSHOT", "RUN_INFO", "SEGMENTS_DIR", "SEGMENT_SUFFIX",
    "STATS_FILE", "ArchiveDamaged", "ArchiveIOError", "ArchiveLockedError", "ArchiveRead", "ArchiveWriter",
    "CompactReport", "RecoveryReport", "compact", "iter_records", "list_runs", "load_run_info", "read_events",
    "read_migrations", "read_programs", "recover", "write_json_atomic", "write_run_info",
]


# ---------------------------------------------------------------------------------------------------------------
# Write failures


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem holding ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class ArchiveIOError(RuntimeError):
    """Writing the archive failed (a full disk, a read-only or failing device). Every acknowledged row is kept."""

    def __init__(self, path: Path, cause: OSError):
        self.path = Path(path)
        self.cause = cause
        self.errno = cause.errno
        self.free_bytes = free_bytes(self.path)
        super().__init__(self.one_line())

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)

    def one_line(self) -> str:
        free = human_bytes(self.free_bytes)
        if self.disk_full:
            return f"disk full: cannot write {self.path} ({free} free on its filesystem)"
        reason = self.cause.strerror or str(self.cause)
        return f"I/O error writing {self.path}: {reason} ({free} free on its filesystem)"


@contextlib.contextmanager
def archive_io(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ArchiveIOError(path, exc) from None


# ---------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class ArchiveRead:
    """What ``read_programs`` found: the deduplicated rows and every file it had to skip, with the reason."""

    table: pa.Table
    bad_files: list[tuple[Path, str]] = field(default_factory=list)


def _sql_filter(table: pa.Table, where: str) -> pa.Table:
    """Rows of ``table`` matching the SQL expression ``where``, in their original order."""
    con = duckdb.connect()
    try:
        con.register("programs", table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64))))
        relation = con.sql(f"SELECT * FROM programs WHERE ({where}) ORDER BY _row")
        result = to_arrow(relation)
    except duckdb.Error as exc:
        raise ValueError(f"invalid archive filter {where!r}: {exc}") from None
    finally:
        con.close()
    return conform(result.drop_columns(["_row"]), table.schema, table.column_names)


def _warn(bad: list[tuple[Path, str]]) -> Any:
    def skip(path: Path, reason: str) -> None:
        # skip <- read_segments or _journal_tables <- _read_table <- the public reader <- its caller
        warnings.warn(f"evolve archive: skipping unreadable file {path} ({reason})", stacklevel=5)
        bad.append((path, reason))

    return skip


def _journal_tables(run_dir: Path, bad: list[tuple[Path, str]], table: TableKind) -> list[pa.Table]:
    tables = []
    for content in read_journals(run_dir):
        if content.bad:
            lines = format_ranges(b.number for b in content.bad)
            _warn(bad)(content.path, f"line(s) {lines} do not read back: {content.bad[0].reason}")
        if content.of(table):
            tables.append(content.arrow(table))
    return tables


def _read_table(run_dir: Path, table: TableKind, include_journal: bool, columns: list[str] | None = None
                ) -> ArchiveRead:
    """Every row of one table (segments and, unless told not to, journals), deduplicated, in the table's order;
    only ``columns`` (a subset of the schema, in its order) when given."""
    bad: list[tuple[Path, str]] = []
    # Journals before segments: a flush that happens between the two reads moves rows from a journal we already
    # read into a segment we are about to read, so no row can be missed.
    journal = _journal_tables(run_dir, bad, table) if include_journal else []
    tables = read_segments(run_dir, table, columns, _warn(bad)) + [conform(t, table.schema, columns) for t in journal]
    schema = table.schema if columns is None else pa.schema([table.schema.field(c) for c in columns])
    return ArchiveRead(dedup_sorted(tables, schema, list(table.key), table.order), bad)


def read_programs(
    run_dir: str | Path,
    columns: list[str] | None = None,
    where: str | None = None,
    include_journal: bool = True,
) -> ArchiveRead:
    """All program rows of a run, one per ``program_id`` (the earliest written), sorted by iteration.

    ``where`` is a SQL boolean expression over the archive columns, evaluated by DuckDB after deduplication (e.g.
    ``"status = 'ok' AND score > 2.5"``). ``include_journal`` also returns rows a live (or dead, not yet recovered)
    writer has journaled but not yet written to a segment. Files (and journal lines) that do not read back are
    skipped with a warning and listed in ``bad_files``; ``evolve.damage.inspect_run`` says what they held.
    """
    unknown = [c for c in columns or [] if c not in ARCHIVE_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown archive column(s) {unknown}; columns are {ARCHIVE_SCHEMA.names}")
    if where is not None or columns is None:
        read_cols = None
    else:
        read_cols = [c for c in ARCHIVE_SCHEMA.names if c in {*columns, "program_id", "iteration"}]
    read = _read_table(Path(run_dir), PROGRAM_TABLE, include_journal, read_cols)
    table = read.table
    if where is not None:
        table = _sql_filter(table, where)
    if columns is not None:
        table = table.select(columns)
    return ArchiveRead(table=table, bad_files=read.bad_files)


def read_migrations(run_dir: str | Path, include_journal: bool = True) -> pa.Table:
    """Every ring-migration event of a run (deduplicated), sorted by iteration."""
    return _read_table(Path(run_dir), MIGRATION_TABLE, include_journal).table


def read_events(run_dir: str | Path, kinds: Iterable[str] | None = None, include_journal: bool = True) -> pa.Table:
    """The run's events (``EVENT_SCHEMA``), one per ``event_id`` (the earliest written), ordered by ``created_at``
    then ``event_id``; only those of ``kinds`` when given. Unreadable files are skipped with a warning, like
    ``read_programs``; ``evolve.damage.inspect_run`` says what they held."""
    table = _read_table(Path(run_dir), EVENT_TABLE, include_journal).table
    if kinds is not None:
        table = table.filter(pc.is_in(table.column("kind"), value_set=pa.array(list(kinds), pa.string())))
    return table


def iter_records(run_dir: str | Path, where: str | None = None) -> Iterator[ProgramRecord]:
    """The run's programs as ``ProgramRecord`` objects, in iteration order."""
    table = read_programs(run_dir, where=where).table
    for batch in table.to_batches(max_chunksize=1024):
        for row in batch.to_pylist():
            yield ProgramRecord.from_row(row)


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _program_row(record: ProgramRecord, run_id: str) -> dict[str, Any]:
    row = record.to_row()
    if not row["run_id"]:
        row["run_id"] = run_id
    return row


def _event_row(kind: str, data: Mapping[str, Any], program_id: str | None, iteration: int, event_id: str | None,
               run_id: str) -> dict[str, Any]:
    """An events row, checked: a bad argument is the caller's mistake, reported before anything is written."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"an event's kind must be a non-empty string, not {kind!r}")
    if not isinstance(data, Mapping):
        raise TypeError(f"an event's data must be a mapping (a JSON object), not {type(data).__name__}")
    if event_id is not None and (not isinstance(event_id, str) or not event_id):
        raise ValueError(f"event_id must be a non-empty string, not {event_id!r}")
    if program_id is not None and not isinstance(program_id, str):
        raise TypeError(f"program_id must be a string or None, not {type(program_id).__name__}")
    try:
        text = json.dumps(dict(data), separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the data of a {kind!r} event is not JSON ({exc}); store numbers, text, lists and "
                         "objects (NaN and infinities as null or text)") from None
    return {
        "event_id": event_id if event_id is not None else secrets.token_hex(12),
        "kind": kind,
        "iteration": int(iteration),
        "program_id": program_id,
        "created_at": int(time.time() * 1000),
        "data": text,
        "run_id": run_id,
    }


def _make_reserve(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            os.pwrite(fd, bytes(size), 0)  # a filesystem without fallocate: real zeros take the space too
    finally:
        os.close(fd)


class ArchiveWriter:
    """Appends a run's programs, migrations and events. One writer per run at a time (enforced by a lock file).

    Thread-safe: ``append``, ``record_migration`` and ``record_event`` may be called from several threads.
    ``recover=False`` takes the lock without converting journals, for a caller that inspects the run first and then
    calls ``recover``.
    ``failure`` is set when a write failed after the row it carried was saved anyway (into the reserve): the
    caller should stop.
    """

    def __init__(self, run_dir: str | Path, run_id: str, segment_rows: int = 1024, flush_seconds: float = 5.0,
                 *, recover: bool = True, reserve_bytes: int = RESERVE_BYTES):
        if segment_rows < 1:
            raise ValueError("segment_rows must be >= 1")
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.segment_rows = segment_rows
        self.flush_seconds = flush_seconds
        with archive_io(self.run_dir):
            for name in (SEGMENTS_DIR, MIGRATIONS_DIR, JOURNAL_DIR):
                (self.run_dir / name).mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_run(self.run_dir)
        self._mutex = threading.RLock()
        self.recovery: RecoveryReport | None = None
        self._reserve = self.run_dir / RESERVE_FILE
        try:
            if recover:
                self.recover()
            if reserve_bytes:
                with archive_io(self._reserve):
                    _make_reserve(self._reserve, reserve_bytes)
        except BaseException:
            unlock(self._lock_fd)
            raise
        # The session's nanosecond clock leads every file name, so sorted names follow write order across resumes.
        self._session = f"{time.time_ns():019d}-{os.getpid()}"
        self._seq = 0
        self._journal_fd: int | None = None
        self._journal_size = 0
        self._rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in TABLES}  # journaled, not yet flushed
        self._last_flush = time.monotonic()
        self._closed = False
        self.failure: ArchiveIOError | None = None
        self.rows_written = 0
        self.segments_written = 0

    def recover(self, accepted: RunInspection | None = None, note: dict[str, Any] | None = None) -> RecoveryReport:
        """Convert journals left by a dead writer (see ``evolve.recovery.recover_locked``)."""
        with self._mutex, archive_io(self.run_dir):
            self.recovery = recover_locked(self.run_dir, accepted, note)
        return self.recovery

    # -- journal ------------------------------------------------------------------------------------------------

    @property
    def _stem(self) -> str:
        return f"{self._session}-{self._seq:06d}"

    @property
    def journal_path(self) -> Path:
        return self.run_dir / JOURNAL_DIR / (self._stem + JOURNAL_SUFFIX)

    def _write_line(self, data: bytes) -> None:
        if self._journal_fd is None:
            self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._journal_size = os.fstat(self._journal_fd).st_size
        try:
            if faults.armed("torn"):
                os.write(self._journal_fd, data[: len(data) // 2])
                faults.crash()
            faults.enospc(str(self.journal_path))
            view = memoryview(data)
            while view:  # regular files rarely write short, but a full disk or a signal can
                n = os.write(self._journal_fd, view)
                view = view[n:]
        except OSError:
            # Leave no half line behind: the row is written again, whole, or reported as not written.
            with contextlib.suppress(OSError):
                os.ftruncate(self._journal_fd, self._journal_size)
            raise
        self._journal_size += len(data)

    def _release_reserve(self) -> bool:
        try:
            self._reserve.unlink()
        except OSError:
            return False
        return True

    def _journal(self, tag: str, row: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("ArchiveWriter is closed")
        data = encode_line(tag, row)
        faults.check("append")
        try:
            self._write_line(data)
        except OSError as exc:
            error = ArchiveIOError(self.journal_path, exc)  # the free space as the write found it
            if not error.disk_full or not self._release_reserve():
                raise error from None
            # The disk is full: spend the reserve on this row, then ask the caller to stop.
            with archive_io(self.journal_path):
                self._write_line(data)
            self.failure = self.failure or error

    # -- public API ---------------------------------------------------------------------------------------------

    def _add(self, table: TableKind, row: dict[str, Any]) -> None:
        with self._mutex:
            self._journal(table.tag, row)
            self._rows[table.name].append(row)
            self._flush_if_due()

    def append(self, record: ProgramRecord) -> None:
        """Durable against SIGKILL when this returns; written to a Parquet segment at the next flush."""
        self._add(PROGRAM_TABLE, _program_row(record, self.run_id))

    def record_migration(self, program_id: str, from_island: int, to_island: int, iteration: int) -> None:
        row = {
            "program_id": program_id,
            "from_island": int(from_island),
            "to_island": int(to_island),
            "iteration": int(iteration),
            "created_at": int(time.time() * 1000),
        }
        self._add(MIGRATION_TABLE, row)

    def record_event(self, kind: str, data: Mapping[str, Any], *, program_id: str | None = None,
                     iteration: int = 0, event_id: str | None = None) -> str:
        """Journal one event now (durable once this returns, like ``append``); it reaches an events/ segment with the
        next flush. Returns its id: ``event_id`` when given (a caller that must be idempotent across a resume derives
        it from its content), else a fresh unique id. Thread-safe.

        Recording an ``event_id`` again keeps one row, the earliest written (readers and compaction deduplicate).
        ``data`` must be JSON (no NaN): a ``ValueError`` says so before anything is written."""
        row = _event_row(kind, data, program_id, iteration, event_id, self.run_id)
        self._add(EVENT_TABLE, row)
        return str(row["event_id"])

    def _flush_if_due(self) -> None:
        # The row is already safe in the journal: a failed flush is reported through ``failure``, not raised.
        try:
            self._maybe_flush_locked()
        except ArchiveIOError as exc:
            self.failure = self.failure or exc

    @property
    def pending(self) -> int:
        """Rows journaled but not yet in a segment."""
        return sum(len(rows) for rows in self._rows.values())

    def maybe_flush(self) -> bool:
        """Flush if the batch is full or ``flush_seconds`` passed since the last flush. True if it flushed."""
        with self._mutex:
            return self._maybe_flush_locked()

    def _maybe_flush_locked(self) -> bool:
        if not self.pending:
            return False
        if (
            any(len(rows) >= self.segment_rows for rows in self._rows.values())
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self._flush_locked()
            return True
        return False

    def flush(self) -> None:
        """Write pending rows as immutable segments, then drop the journal that covered them."""
        with self._mutex:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self.pending:
            return
        stem = self._stem
        for table in TABLES:
            rows = self._rows[table.name]
            if not rows:
                continue
            path = self.run_dir / table.directory / (stem + SEGMENT_SUFFIX)
            with archive_io(path):
                path.parent.mkdir(exist_ok=True)  # events/ appears with a run's first event
                written = table.table(rows)
                write_parquet_atomic(written, path)
                ledger_table(self.run_dir, path, table, written)
        faults.check("segment")
        programs = self._rows[PROGRAM_TABLE.name]
        self.rows_written += len(programs)
        self.segments_written += bool(programs)
        # Only now is the journal redundant. A crash before the unlink leaves a journal whose rows recovery finds
        # already present in the segment of the same stem.
        old = self.journal_path
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        self._seq += 1
        with contextlib.suppress(OSError):
            old.unlink()
        self._rows = {t.name: [] for t in TABLES}

    def close(self, flush: bool = True) -> None:
        """Flush (unless ``flush=False``: after a failed write the journal already holds every row) and release."""
        with self._mutex:
            if self._closed:
                return
            try:
                if flush:
                    self._flush_locked()
            finally:
                self._closed = True
                if self._journal_fd is not None:
                    os.close(self._journal_fd)
                    self._journal_fd = None
                self._release_reserve()
                unlock(self._lock_fd)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
