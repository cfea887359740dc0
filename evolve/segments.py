"""Immutable Parquet files of a run: names, atomic writes, reading, full verification, and the ledger.

Every segment is written under a hidden temporary name that does not end in ``.parquet``, fsynced, renamed into
place, and the directory fsynced, so a reader sees a whole file or none. Pages carry CRC checksums
(``write_page_checksum``): bytes flipped inside a column chunk are then found by a full read with verification,
which a footer check (or DuckDB, which does not verify page checksums) would miss.

The ledger (``RUN/ledger.jsonl``) gets one line per Parquet file written: its rows and the iterations it holds. It is
what lets evolve name the iterations a damaged or missing segment held even when nothing of the file is readable
(a zero-byte file). It is advisory: a file without a ledger line is still read, and a torn last line is ignored.

A run's archive is a few append-only tables (``TABLES``): programs, migrations and events. Each has its folder, its
schema, the columns that identify a row and its journal tag; everything that writes, reads, verifies, recovers,
compacts or quarantines files iterates over ``TABLES``, so every table gets the same guarantees.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evolve.ranges import from_ranges, to_ranges
from evolve.schema import ARCHIVE_SCHEMA

SEGMENTS_DIR = "segments"
MIGRATIONS_DIR = "migrations"
EVENTS_DIR = "events"
JOURNAL_DIR = "journal"
DAMAGED_DIR = "damaged"
LEDGER_FILE = "ledger.jsonl"
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
MIGRATION_KEY = ("program_id", "from_island", "to_island", "iteration")

# Anything that happens to a run and is not a program row (held-out results, standings, approvals, strategies,
# notes, ...): ``kind`` is free-form text owned by the feature that records it, ``data`` a JSON object as text.
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),  # unique within the run
        ("kind", pa.string()),
        ("iteration", pa.int64()),  # the run's iteration when recorded (0: before the first child)
        ("program_id", pa.string()),  # the program it is about, if any
        ("created_at", pa.timestamp("ms")),  # UTC
        ("data", pa.string()),  # a JSON object (text)
        ("run_id", pa.string()),
    ]
)
EVENT_KEY = ("event_id",)

# What reading a damaged Parquet file may raise (pyarrow's own errors, OS errors, and a few plain ones).
READ_ERRORS = (pa.ArrowException, OSError, ValueError, KeyError, IndexError, TypeError)


@dataclass(frozen=True)
class TableKind:
    """One append-only table of a run: where its files live and what identifies, orders and tags its rows."""

    name: str  # "programs", "migrations", "events" (also the name of its query view, and its damage's ``table``)
    directory: str  # its folder in the run
    schema: pa.Schema
    key: tuple[str, ...]  # rows with equal keys are one row (the earliest written is kept)
    tag: str  # the journal line's tag: ``{"c":<crc>,"<tag>":<row>}``
    noun: str  # what one row is, for messages
    order: tuple[str, ...] = ("iteration",)  # readers return rows sorted by these columns (stable)
    iterations: bool = False  # its rows are iterations of the run's budget: losing one loses an iteration

    @property
    def id_column(self) -> str:
        """A column every file and journal row of this table has (a file without it is not one evolve wrote)."""
        return self.key[0]

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.schema)


PROGRAM_TABLE = TableKind("programs", SEGMENTS_DIR, ARCHIVE_SCHEMA, ("program_id",), "p", "program",
                          iterations=True)
MIGRATION_TABLE = TableKind("migrations", MIGRATIONS_DIR, MIGRATION_SCHEMA, MIGRATION_KEY, "m", "migration")
EVENT_TABLE = TableKind("events", EVENTS_DIR, EVENT_SCHEMA, EVENT_KEY, "e", "event",
                        order=("created_at", "event_id"))
TABLES = (PROGRAM_TABLE, MIGRATION_TABLE, EVENT_TABLE)
TABLE_BY_TAG = {t.tag: t for t in TABLES}
TABLE_BY_DIRECTORY = {t.directory: t for t in TABLES}


def table_of_file(name: str) -> TableKind:
    """The table a file (relative to the run folder, e.g. ``"events/<name>.parquet"``) belongs to."""
    return TABLE_BY_DIRECTORY.get(name.split("/", 1)[0], PROGRAM_TABLE)


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(final: Path) -> Path:
    # Hidden and not ending in ".parquet": neither pyarrow.dataset nor a DuckDB "*.parquet" glob ever picks it up.
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
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
    fsync_dir(path.parent)


def write_parquet_atomic(table: pa.Table, final: Path) -> None:
    tmp = temp_name(final)
    try:
        pq.write_table(table, tmp, compression=COMPRESSION, write_page_checksum=True)
        fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(final.parent)


# ---------------------------------------------------------------------------------------------------------------
# Tables and files


def segment_files(directory: Path) -> list[Path]:
    """Visible ``*.parquet`` files in write order (names start with the session's nanosecond clock)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / n for n in sorted(n for n in names if n.endswith(SEGMENT_SUFFIX) and not n.startswith("."))]


def conform(table: pa.Table, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
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


def read_segment(path: Path, schema: pa.Schema, columns: list[str] | None = None, id_column: str = "program_id"
                 ) -> pa.Table:
    """One file, every page decompressed and its checksum (when written with one) verified.

    Raises one of ``READ_ERRORS`` when the file is not a whole, valid evolve segment (one without ``id_column``).
    """
    parquet = pq.ParquetFile(path, page_checksum_verification=True)
    present = set(parquet.schema_arrow.names)
    if id_column not in present:
        raise ValueError(f"not an evolve archive file (no {id_column} column)")
    wanted = None if columns is None else [c for c in columns if c in present]
    return conform(parquet.read(columns=wanted), schema, columns)


def verify_file(path: Path, id_column: str = "program_id") -> str | None:
    """``None`` if every page of ``path`` reads back and matches its checksum; else the reason. Bounded memory."""
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        if id_column not in parquet.schema_arrow.names:
            return f"not an evolve archive file (no {id_column} column)"
        for _ in parquet.iter_batches(batch_size=65536):
            pass
    except FileNotFoundError:
        raise
    except READ_ERRORS as exc:
        return describe_error(path, exc)
    return None


def describe_error(path: Path, exc: BaseException) -> str:
    """A reason a user can act on: the zero-byte and no-footer cases named plainly."""
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    if size == 0:
        return "the file is empty (0 bytes)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "magic bytes" in text:
        return f"not a whole Parquet file: no footer ({size} bytes; truncated, or not Parquet at all)"
    return f"{type(exc).__name__}: {text}"


def footer_rows(path: Path) -> int | None:
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except READ_ERRORS:
        return None


def readable_column(path: Path, name: str) -> list[Any] | None:
    """One column of a damaged file, if that column's own chunks still read back (the damage may be elsewhere)."""
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        if name not in parquet.schema_arrow.names:
            return None
        return parquet.read(columns=[name]).column(name).to_pylist()
    except READ_ERRORS:
        return None


# ---------------------------------------------------------------------------------------------------------------
# The ledger


@dataclass(frozen=True)
class LedgerEntry:
    """What the writer recorded about one Parquet file when it wrote it."""

    file: str  # relative to the run folder, e.g. "segments/<name>.parquet"
    rows: int
    iterations: frozenset[int] = frozenset()  # program files only
    kinds: tuple[tuple[str, int], ...] = ()  # event files only: (kind, rows of that kind)


@dataclass
class Ledger:
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    retired: set[str] = field(default_factory=set)  # compacted away, moved to damaged/, or acknowledged missing
    bad_lines: int = 0

    @property
    def max_iteration(self) -> int:
        return max((max(e.iterations) for e in self.entries.values() if e.iterations), default=-1)

    def expected_files(self) -> list[str]:
        """Files the ledger says should be on disk."""
        return sorted(name for name in self.entries if name not in self.retired)


def ledger_line(run_dir: Path, entry: dict[str, Any]) -> None:
    """Append one line to the run's ledger (one ``write``; no fsync: losing a line loses only information)."""
    data = (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(run_dir / LEDGER_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def ledger_written(run_dir: Path, path: Path, rows: int, iterations: Iterable[int] | None,
                   kinds: Iterable[str] | None = None) -> None:
    entry: dict[str, Any] = {"file": relative(run_dir, path), "rows": int(rows)}
    if iterations is not None:
        entry["iterations"] = to_ranges(iterations)
    if kinds is not None:
        entry["kinds"] = dict(sorted(Counter(str(k) for k in kinds).items()))
    ledger_line(run_dir, entry)


def ledger_table(run_dir: Path, path: Path, kind: TableKind, table: pa.Table) -> None:
    """The ledger line of a file of ``kind`` just written: what it holds, so damage to it can be named later."""
    iterations = table.column("iteration").to_pylist() if kind.iterations else None
    kinds = table.column("kind").to_pylist() if kind is EVENT_TABLE else None
    ledger_written(run_dir, path, table.num_rows, iterations, kinds)


def ledger_retired(run_dir: Path, paths: Iterable[Path | str], why: str, into: str = "") -> None:
    entry: dict[str, Any] = {"retired": [p if isinstance(p, str) else relative(run_dir, p) for p in paths], "why": why}
    if into:
        entry["into"] = into
    ledger_line(run_dir, entry)


def read_ledger(run_dir: Path) -> Ledger:
    ledger = Ledger()
    try:
        data = (run_dir / LEDGER_FILE).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return ledger
    lines = data.split(b"\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if "file" in entry:
                kinds = entry.get("kinds") if isinstance(entry.get("kinds"), dict) else {}
                ledger.entries[str(entry["file"])] = LedgerEntry(
                    str(entry["file"]), int(entry.get("rows", 0)), frozenset(from_ranges(entry.get("iterations"))),
                    tuple((str(k), int(n)) for k, n in kinds.items()))
                ledger.retired.discard(str(entry["file"]))
            elif "retired" in entry:
                ledger.retired.update(str(name) for name in entry["retired"])
        except (ValueError, TypeError, AttributeError):
            if number < len(lines) - 1:  # a torn last line is an append cut short, not damage
                ledger.bad_lines += 1
    return ledger


def relative(run_dir: Path, path: Path) -> str:
    try:
        return str(path.relative_to(run_dir))
    except ValueError:
        return str(path)
