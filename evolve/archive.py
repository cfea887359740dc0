"""The run archive on disk: append-only, immutable Parquet segments plus a per-session journal.

Durability has two tiers so that nothing is lost and the driver stays cheap:

* ``ArchiveWriter.append`` writes one JSON line to the session's journal file with a single unbuffered
  ``os.write`` before returning. The kernel owns those bytes from then on, so the record survives a SIGKILL of the
  process (not a power cut: that would need an fsync per record, which the spec trades away).
* Rows are also buffered in memory and written in batches as one immutable Parquet segment under a hidden
  temporary name, fsynced, renamed into place and the directory fsynced. The journal file that covered those rows
  is then deleted and the next append starts a new one. The segment and its journal share a stem, which makes
  recovery idempotent.

``recover`` (run by every writer on open) turns journals left by a dead writer into segments. Readers skip files
that are not valid Parquet with a warning naming them, read live journals too, and deduplicate by ``program_id``,
so a crash between a segment's rename and its journal's deletion never yields a duplicate row.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evolve.schema import ARCHIVE_SCHEMA, ProgramRecord

SEGMENTS_DIR = "segments"
MIGRATIONS_DIR = "migrations"
JOURNAL_DIR = "journal"
RUN_INFO = "run.json"
STATS_FILE = "stats.json"
PROBLEM_SNAPSHOT = "problem.toml"
LOCK_FILE = ".lock"
JOURNAL_SUFFIX = ".jsonl"
SEGMENT_SUFFIX = ".parquet"
COMPRESSION = "zstd"

MIGRATION_SCHEMA = pa.schema(
    [
        pa.field("program_id", pa.string(), nullable=False),
        pa.field("from_island", pa.int32()),
        pa.field("to_island", pa.int32()),
        pa.field("iteration", pa.int64()),  # driver iteration at which the ring migration happened
        pa.field("created_at", pa.timestamp("ms", tz="UTC")),
    ]
)
_MIGRATION_KEY = ("program_id", "from_island", "to_island", "iteration")

# Journal line tags: one JSON object per line, {"p": <archive row>} or {"m": <migration row>}.
_PROGRAM_TAG = "p"
_MIGRATION_TAG = "m"


class ArchiveLockedError(RuntimeError):
    """Another live process holds this run's writer lock."""


# ---------------------------------------------------------------------------------------------------------------
# Atomic file helpers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(final: Path) -> Path:
    # Hidden and not ending in ".parquet": neither pyarrow.dataset nor a DuckDB "*.parquet" glob ever picks it up.
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _write_parquet_atomic(table: pa.Table, final: Path) -> None:
    tmp = _temp_name(final)
    try:
        pq.write_table(table, tmp, compression=COMPRESSION)
        _fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(final.parent)


def write_run_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    """Atomically write ``run.json`` (run id, problem, settings, seed, created time: whatever the loop records)."""
    write_json_atomic(Path(run_dir) / RUN_INFO, info)


def load_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run folder; ``{}`` when the run has none yet."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def list_runs(root: str | Path = "archive") -> list[Path]:
    """Run folders under ``root`` (``<root>/<problem>/<run-id>/``), sorted by problem then run id."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for problem_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for run_dir in sorted(p for p in problem_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if any((run_dir / name).exists() for name in (RUN_INFO, SEGMENTS_DIR, JOURNAL_DIR)):
                runs.append(run_dir)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Rows


def _program_row(record: ProgramRecord, run_id: str) -> dict[str, Any]:
    row = record.to_row()
    if not row["run_id"]:
        row["run_id"] = run_id
    return row


def _programs_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ARCHIVE_SCHEMA)


def _migrations_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=MIGRATION_SCHEMA)


def _segment_files(directory: Path) -> list[Path]:
    """Visible ``*.parquet`` files in write order (names start with the session's nanosecond clock)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX) and not p.name.startswith("."))


def _journal_files(run_dir: Path) -> list[Path]:
    directory = run_dir / JOURNAL_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(JOURNAL_SUFFIX) and not p.name.startswith("."))


@dataclass(frozen=True)
class JournalContent:
    programs: list[dict[str, Any]]
    migrations: list[dict[str, Any]]
    bad_lines: int  # unparseable lines (a torn last line after a crash mid-append, or damage)


def _read_journal(path: Path) -> JournalContent:
    programs: list[dict[str, Any]] = []
    migrations: list[dict[str, Any]] = []
    bad = 0
    data = path.read_bytes()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        if not isinstance(entry, dict):
            bad += 1
        elif _PROGRAM_TAG in entry:
            programs.append(entry[_PROGRAM_TAG])
        elif _MIGRATION_TAG in entry:
            migrations.append(entry[_MIGRATION_TAG])
        else:
            bad += 1
    return JournalContent(programs, migrations, bad)


def _conform(table: pa.Table, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
    """Reorder/cast a segment to ``schema`` (columns an older segment lacks become nulls)."""
    names = columns if columns is not None else schema.names
    arrays = []
    for name in names:
        target = schema.field(name).type
        if name in table.column_names:
            arrays.append(table.column(name).cast(target))
        else:
            arrays.append(pa.nulls(table.num_rows, target))
    return pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(n) for n in names]))


def _read_segment(path: Path, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
    wanted = None if columns is None else [c for c in columns if c in _file_columns(path)]
    table = pq.read_table(path, columns=wanted)
    return _conform(table, schema, columns)


def _file_columns(path: Path) -> set[str]:
    return set(pq.read_schema(path).names)


def _read_dir(
    directory: Path, schema: pa.Schema, columns: list[str] | None, bad_files: list[tuple[Path, str]]
) -> list[pa.Table]:
    tables = []
    for path in _segment_files(directory):
        try:
            tables.append(_read_segment(path, schema, columns))
        except FileNotFoundError:
            continue  # removed by a concurrent compaction; its rows are in the merged segment
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"evolve archive: skipping unreadable file {path} ({reason})", stacklevel=3)
            bad_files.append((path, reason))
    return tables


def _first_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """Keep the first row (in table order) of each distinct ``keys`` tuple."""
    if table.num_rows == 0:
        return table
    if len(keys) == 1 and pc.count_distinct(table.column(keys[0])).as_py() == table.num_rows:
        return table  # the usual case: nothing to drop, no copy
    positions = pa.array(np.arange(table.num_rows, dtype=np.int64))
    grouped = table.select(keys).append_column("_pos", positions)
    first = grouped.group_by(keys, use_threads=False).aggregate([("_pos", "min")]).column("_pos_min")
    return table.take(pa.array(np.sort(first.to_numpy())))


def _sorted_by_iteration(table: pa.Table) -> pa.Table:
    iteration = table.column("iteration").to_numpy()
    if table.num_rows < 2 or bool(np.all(iteration[1:] >= iteration[:-1])):
        return table  # segments are written in iteration order in a sequential run: no copy
    return table.take(pc.sort_indices(table, [("iteration", "ascending")]))  # stable: keeps write order on ties


# ---------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class ArchiveRead:
    """What ``read_programs`` found: the deduplicated rows and every file it had to skip, with the reason."""

    table: pa.Table
    bad_files: list[tuple[Path, str]] = field(default_factory=list)


def _journal_rows(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    programs: list[dict[str, Any]] = []
    migrations: list[dict[str, Any]] = []
    for path in _journal_files(run_dir):
        try:
            content = _read_journal(path)
        except FileNotFoundError:
            continue  # flushed and deleted meanwhile: its segment is read after the journals
        programs.extend(content.programs)
        migrations.extend(content.migrations)
    return programs, migrations


def _sql_filter(table: pa.Table, where: str) -> pa.Table:
    """Rows of ``table`` matching the SQL expression ``where``, in their original order."""
    con = duckdb.connect()
    try:
        con.register("programs", table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64))))
        relation = con.sql(f"SELECT * FROM programs WHERE ({where}) ORDER BY _row")
        result = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    except duckdb.Error as exc:
        raise ValueError(f"invalid archive filter {where!r}: {exc}") from None
    finally:
        con.close()
    return _conform(result.drop_columns(["_row"]), table.schema, table.column_names)


def read_programs(
    run_dir: str | Path,
    columns: list[str] | None = None,
    where: str | None = None,
    include_journal: bool = True,
) -> ArchiveRead:
    """All program rows of a run, one per ``program_id`` (the earliest written), sorted by iteration.

    ``where`` is a SQL boolean expression over the archive columns, evaluated by DuckDB after deduplication (e.g.
    ``"status = 'ok' AND score > 2.5"``). ``include_journal`` also returns rows a live (or dead, not yet recovered)
    writer has journaled but not yet written to a segment.
    """
    run_dir = Path(run_dir)
    unknown = [c for c in columns or [] if c not in ARCHIVE_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown archive column(s) {unknown}; columns are {ARCHIVE_SCHEMA.names}")
    if where is not None or columns is None:
        read_cols = None
    else:
        read_cols = [c for c in ARCHIVE_SCHEMA.names if c in {*columns, "program_id", "iteration"}]
    # Journals before segments: a flush that happens between the two reads moves rows from a journal we already
    # read into a segment we are about to read, so no row can be missed.
    journal = _journal_rows(run_dir)[0] if include_journal else []
    bad: list[tuple[Path, str]] = []
    tables = _read_dir(run_dir / SEGMENTS_DIR, ARCHIVE_SCHEMA, read_cols, bad)
    if journal:
        tables.append(_conform(_programs_table(journal), ARCHIVE_SCHEMA, read_cols))
    schema = ARCHIVE_SCHEMA if read_cols is None else pa.schema([ARCHIVE_SCHEMA.field(c) for c in read_cols])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    table = _sorted_by_iteration(_first_per_key(table, ["program_id"]))
    if where is not None:
        table = _sql_filter(table, where)
    if columns is not None:
        table = table.select(columns)
    return ArchiveRead(table=table, bad_files=bad)


def read_migrations(run_dir: str | Path, include_journal: bool = True) -> pa.Table:
    """Every ring-migration event of a run (deduplicated), sorted by iteration."""
    run_dir = Path(run_dir)
    journal = _journal_rows(run_dir)[1] if include_journal else []
    tables = _read_dir(run_dir / MIGRATIONS_DIR, MIGRATION_SCHEMA, None, [])
    if journal:
        tables.append(_migrations_table(journal))
    table = pa.concat_tables(tables) if tables else MIGRATION_SCHEMA.empty_table()
    return _sorted_by_iteration(_first_per_key(table, list(_MIGRATION_KEY)))


def iter_records(run_dir: str | Path, where: str | None = None) -> Iterator[ProgramRecord]:
    """The run's programs as ``ProgramRecord`` objects, in iteration order."""
    table = read_programs(run_dir, where=where).table
    for batch in table.to_batches(max_chunksize=1024):
        for row in batch.to_pylist():
            yield ProgramRecord.from_row(row)


# ---------------------------------------------------------------------------------------------------------------
# Recovery and compaction


@dataclass(frozen=True)
class RecoveryReport:
    journals: int  # journal files found and converted (then deleted)
    programs: int  # program rows written to new segments
    migrations: int  # migration rows written to new segments
    skipped_lines: int  # torn or unparseable journal lines ignored
    duplicates: int  # journal rows already present in the matching segment (crash after flush)
    temp_files_removed: int  # temporary files abandoned by dead writers


def _lock_run(run_dir: Path) -> int:
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


def _unlock(fd: int) -> None:
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


def _remove_dead_temps(directory: Path) -> int:
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


def _existing_keys(directory: Path, stem: str, keys: list[str]) -> set[tuple[Any, ...]]:
    """Keys already written for a journal stem (its own segment and any earlier recovery parts)."""
    found: set[tuple[Any, ...]] = set()
    for path in _segment_files(directory):
        if path.name == stem + SEGMENT_SUFFIX or path.name.startswith(stem + "-r"):
            try:
                table = pq.read_table(path, columns=keys)
            except (pa.ArrowException, OSError):
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


def _recover_locked(run_dir: Path, skip: set[Path]) -> RecoveryReport:
    journals = programs = migrations = skipped = duplicates = 0
    temps = sum(_remove_dead_temps(run_dir / d) for d in (SEGMENTS_DIR, MIGRATIONS_DIR, JOURNAL_DIR))
    for path in _journal_files(run_dir):
        if path in skip:
            continue
        content = _read_journal(path)
        skipped += content.bad_lines
        stem = path.name[: -len(JOURNAL_SUFFIX)]
        for directory, rows, keys, make in (
            (run_dir / SEGMENTS_DIR, content.programs, ["program_id"], _programs_table),
            (run_dir / MIGRATIONS_DIR, content.migrations, list(_MIGRATION_KEY), _migrations_table),
        ):
            if not rows:
                continue
            have = _existing_keys(directory, stem, keys)
            fresh, seen = [], set(have)
            for row in rows:
                key = tuple(row.get(k) for k in keys)
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                fresh.append(row)
            if fresh:
                directory.mkdir(parents=True, exist_ok=True)
                _write_parquet_atomic(make(fresh), _free_name(directory, stem))
                if directory.name == SEGMENTS_DIR:
                    programs += len(fresh)
                else:
                    migrations += len(fresh)
        path.unlink()
        journals += 1
    return RecoveryReport(journals, programs, migrations, skipped, duplicates, temps)


def recover(run_dir: str | Path) -> RecoveryReport:
    """Convert journals left by dead writers into segments, then delete them. Idempotent.

    Raises ``ArchiveLockedError`` if a live writer holds the run (its journal is not abandoned).
    """
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL_DIR).is_dir():
        return RecoveryReport(0, 0, 0, 0, 0, 0)  # nothing was ever journaled here
    fd = _lock_run(run_dir)
    try:
        return _recover_locked(run_dir, skip=set())
    finally:
        _unlock(fd)


@dataclass(frozen=True)
class CompactReport:
    merged_files: int  # small segments merged (and deleted)
    rows: int  # rows in the merged segment(s)
    bad_files: list[tuple[Path, str]] = field(default_factory=list)  # left untouched


def _compact_dir(directory: Path, schema: pa.Schema, keys: list[str], small_rows: int) -> CompactReport:
    small: list[Path] = []
    tables: list[pa.Table] = []
    bad: list[tuple[Path, str]] = []
    for path in _segment_files(directory):
        try:
            if pq.ParquetFile(path).metadata.num_rows >= small_rows:
                continue
            table = _read_segment(path, schema, None)
        except (pa.ArrowException, OSError, ValueError) as exc:
            bad.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        small.append(path)
        tables.append(table)
    if len(small) < 2:
        return CompactReport(0, 0, bad)
    merged = _first_per_key(pa.concat_tables(tables), keys)
    # Named after the first part so it sorts where its rows were; a crash before the parts are deleted only
    # leaves duplicates, which readers drop.
    target = directory / f"{small[0].name[: -len(SEGMENT_SUFFIX)]}-c{len(small)}{SEGMENT_SUFFIX}"
    _write_parquet_atomic(merged, target)
    for path in small:
        if path != target:
            path.unlink()
    _fsync_dir(directory)
    return CompactReport(len(small), merged.num_rows, bad)


def compact(run_dir: str | Path, small_rows: int = 1024) -> CompactReport:
    """Merge every segment with fewer than ``small_rows`` rows into one (programs and migrations alike)."""
    run_dir = Path(run_dir)
    a = _compact_dir(run_dir / SEGMENTS_DIR, ARCHIVE_SCHEMA, ["program_id"], small_rows)
    b = _compact_dir(run_dir / MIGRATIONS_DIR, MIGRATION_SCHEMA, list(_MIGRATION_KEY), small_rows)
    return CompactReport(a.merged_files + b.merged_files, a.rows + b.rows, a.bad_files + b.bad_files)


# ---------------------------------------------------------------------------------------------------------------
# Writing


class ArchiveWriter:
    """Appends a run's programs and migration events. One writer per run at a time (enforced by a lock file).

    Thread-safe: ``append`` and ``record_migration`` may be called from several threads.
    """

    def __init__(self, run_dir: str | Path, run_id: str, segment_rows: int = 1024, flush_seconds: float = 5.0):
        if segment_rows < 1:
            raise ValueError("segment_rows must be >= 1")
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.segment_rows = segment_rows
        self.flush_seconds = flush_seconds
        for name in (SEGMENTS_DIR, MIGRATIONS_DIR, JOURNAL_DIR):
            (self.run_dir / name).mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_run(self.run_dir)
        try:
            self.recovery = _recover_locked(self.run_dir, skip=set())
        except BaseException:
            _unlock(self._lock_fd)
            raise
        # The session's nanosecond clock leads every file name, so sorted names follow write order across resumes.
        self._session = f"{time.time_ns():019d}-{os.getpid()}"
        self._seq = 0
        self._journal_fd: int | None = None
        self._programs: list[dict[str, Any]] = []
        self._migrations: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._mutex = threading.RLock()
        self._closed = False
        self.rows_written = 0
        self.segments_written = 0

    # -- journal ------------------------------------------------------------------------------------------------

    @property
    def _stem(self) -> str:
        return f"{self._session}-{self._seq:06d}"

    @property
    def journal_path(self) -> Path:
        return self.run_dir / JOURNAL_DIR / (self._stem + JOURNAL_SUFFIX)

    def _journal(self, tag: str, row: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("ArchiveWriter is closed")
        if self._journal_fd is None:
            self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = (json.dumps({tag: row}, separators=(",", ":")) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # regular files rarely write short, but a full disk or a signal can
            n = os.write(self._journal_fd, view)
            view = view[n:]

    # -- public API ---------------------------------------------------------------------------------------------

    def append(self, record: ProgramRecord) -> None:
        """Durable against SIGKILL when this returns; written to a Parquet segment at the next flush."""
        row = _program_row(record, self.run_id)
        with self._mutex:
            self._journal(_PROGRAM_TAG, row)
            self._programs.append(row)
            self._maybe_flush_locked()

    def record_migration(self, program_id: str, from_island: int, to_island: int, iteration: int) -> None:
        row = {
            "program_id": program_id,
            "from_island": int(from_island),
            "to_island": int(to_island),
            "iteration": int(iteration),
            "created_at": int(time.time() * 1000),
        }
        with self._mutex:
            self._journal(_MIGRATION_TAG, row)
            self._migrations.append(row)
            self._maybe_flush_locked()

    @property
    def pending(self) -> int:
        """Rows journaled but not yet in a segment."""
        return len(self._programs) + len(self._migrations)

    def maybe_flush(self) -> bool:
        """Flush if the batch is full or ``flush_seconds`` passed since the last flush. True if it flushed."""
        with self._mutex:
            return self._maybe_flush_locked()

    def _maybe_flush_locked(self) -> bool:
        if not self._programs and not self._migrations:
            return False
        if (
            len(self._programs) >= self.segment_rows
            or len(self._migrations) >= self.segment_rows
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
        if not self._programs and not self._migrations:
            return
        stem = self._stem
        if self._programs:
            _write_parquet_atomic(_programs_table(self._programs), self.run_dir / SEGMENTS_DIR / (stem + SEGMENT_SUFFIX))
            self.rows_written += len(self._programs)
            self.segments_written += 1
        if self._migrations:
            _write_parquet_atomic(
                _migrations_table(self._migrations), self.run_dir / MIGRATIONS_DIR / (stem + SEGMENT_SUFFIX)
            )
        # Only now is the journal redundant. A crash before the unlink leaves a journal whose rows recovery finds
        # already present in the segment of the same stem.
        old = self.journal_path
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        self._seq += 1
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
        self._programs = []
        self._migrations = []

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            try:
                self._flush_locked()
            finally:
                self._closed = True
                if self._journal_fd is not None:
                    os.close(self._journal_fd)
                    self._journal_fd = None
                _unlock(self._lock_fd)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
