"""Derived files that keep archive queries fast: the per-run index and the record of verified segments.

Both live in ``<run>/.index/`` (or, without write access to the run folder, ``~/.cache/evolve/index/<hash>/``), are
safe to delete, and are rebuilt on use.

* The index: the small ``summary`` columns of every segment in one Parquet file per table (programs, migrations,
  events: every column of the last two), sorted by its id column, recording which segment files it covers (see
  ``evolve.query.RunArchive``).
* ``verified.json``: segments already read in full, every page checksum checked, keyed by name, size and
  modification time. Segments never change once written, so a file is verified once; a file whose size or time
  changed is verified again. ``evolve archive verify`` ignores it and reads everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from evolve.segments import (
    EVENT_TABLE,
    MIGRATION_TABLE,
    PROGRAM_TABLE,
    TableKind,
    temp_name,
    write_json_atomic,
)

# Bump the version when the index's columns change; an index of another version is rebuilt.
INDEX_VERSION = "1"
INDEX_DIR = ".index"
INDEX_MIN_FILES = 32  # fewer segments than this are read directly
INDEX_STALE_FILES = 32  # rebuild once this many segments are newer than the index
INDEX_KEY = b"evolve_index"
VERIFIED_FILE = "verified.json"

SUMMARY_SELECT = """
    program_id, parent_ids[1] AS parent_id, island, iteration, generation, status, score, fitness, cell, mutator
"""


@dataclass(frozen=True)
class Kind:
    """One archive table as queries see it: the view its rows appear in and the columns the index keeps."""

    table: TableKind
    view: str  # the DuckDB view over its segments, index and journal rows
    select: str  # the columns the view (and the index) has, besides ``file``
    lazy: bool = False  # its view is built when a question first names it, so that the others never pay for it

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def directory(self) -> str:
        return self.table.directory

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema


def _every_column(table: TableKind) -> str:
    return ", ".join(table.schema.names)


PROGRAMS = Kind(PROGRAM_TABLE, "summary", SUMMARY_SELECT)
MIGRATIONS = Kind(MIGRATION_TABLE, "migrations", _every_column(MIGRATION_TABLE))
EVENTS = Kind(EVENT_TABLE, "events", _every_column(EVENT_TABLE), lazy=True)
KINDS = (PROGRAMS, MIGRATIONS, EVENTS)


def cache_dirs(run_dir: Path) -> list[Path]:
    """Where derived files may live, first choice first."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:20]
    return [run_dir / INDEX_DIR, Path.home() / ".cache" / "evolve" / "index" / digest]


def index_coverage(path: Path) -> set[str] | None:
    """Segment names an index file covers; None if it is missing, unreadable or of another version."""
    try:
        meta = pq.read_schema(path).metadata or {}
        data = json.loads(meta[INDEX_KEY])
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None
    if data.get("version") != INDEX_VERSION:
        return None
    return set(data.get("covered", []))


def find_index(run_dir: Path, kind: Kind, names: set[str]) -> tuple[Path | None, set[str], tuple[Path, set[str]] | None]:
    """An up-to-date index for the files ``names``: ``(path, covered, None)``; else ``(None, set(), base)`` where
    ``base`` is an older index a new one can extend."""
    base: tuple[Path, set[str]] | None = None
    for directory in cache_dirs(run_dir):
        path = directory / f"{kind.name}.parquet"
        covered = index_coverage(path)
        if covered is None or not covered <= names:
            continue  # missing, of another version, or covering files compacted away since: rebuild
        if len(names - covered) < INDEX_STALE_FILES:
            return path, covered, None
        base = base or (path, covered)
    return None, set(), base


def write_index(con: duckdb.DuckDBPyConnection, kind: Kind, files: list[Path], path: Path,
                base: tuple[Path, set[str]] | None, segments_sql: Callable[[list[Path], pa.Schema], str]
                ) -> set[str] | None:
    """Write an index of ``files``; from ``base`` (an older index) plus the newer files when there is one."""
    if base is not None:
        rest = [p for p in files if p.name not in base[1]]
        source = (f"SELECT * FROM read_parquet({sql_str(str(base[0]))}) UNION ALL BY NAME "
                  f"SELECT {kind.select}, file FROM {segments_sql(rest, kind.schema)}")
    else:
        source = f"SELECT {kind.select}, file FROM {segments_sql(files, kind.schema)}"
    table = to_arrow(con.sql(f"SELECT * FROM ({source}) ORDER BY {kind.table.id_column}"))
    covered = sorted(p.name for p in files)
    meta = json.dumps({"version": INDEX_VERSION, "covered": covered}).encode()
    table = table.replace_schema_metadata({INDEX_KEY: meta})
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, compression="zstd", row_group_size=65536)
        os.replace(tmp, path)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return set(covered)


class VerifiedFiles:
    """The segments of one run already verified in full (see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.files: dict[str, tuple[int, int]] = {}
        self._changed = False
        for directory in cache_dirs(run_dir):
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError, IndexError):
                data = json.loads((directory / VERIFIED_FILE).read_text(encoding="utf-8"))
                if data.get("version") == INDEX_VERSION:
                    self.files = {str(k): (int(v[0]), int(v[1])) for k, v in data.get("files", {}).items()}
                    break

    def known(self, key: str, stamp: tuple[int, int]) -> bool:
        return self.files.get(key) == stamp

    def add(self, key: str, stamp: tuple[int, int]) -> None:
        self.files[key] = stamp
        self._changed = True

    def save(self) -> None:
        if not self._changed:
            return
        # Forget files that are gone (compacted, moved to damaged/).
        files = {k: list(v) for k, v in self.files.items() if os.path.exists(os.path.join(self.run_dir, k))}
        for directory in cache_dirs(self.run_dir):
            try:
                write_json_atomic(directory / VERIFIED_FILE, {"version": INDEX_VERSION, "files": files})
                return
            except OSError:
                continue


DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.list_(pa.string()): "VARCHAR[]",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("ms", tz="UTC"): "TIMESTAMPTZ",
    pa.timestamp("ms"): "TIMESTAMP",
}


def segments_sql(con: duckdb.DuckDBPyConnection, files: list[Path], schema: pa.Schema) -> str:
    """A subquery over ``files`` with every ``schema`` column (typed nulls where a file lacks one) plus ``file``."""
    source = f"read_parquet({sql_list(files)}, filename = true)"
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if not set(schema.names) <= present:
        # DuckDB takes the columns of the first file only; an older segment may lack newer columns.
        source = f"read_parquet({sql_list(files)}, filename = true, union_by_name = true)"
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    # Segments from an older schema lack newer columns: they read as typed nulls.
    columns = ", ".join(f'"{f.name}"' if f.name in present else
                        f'CAST(NULL AS {DUCK_TYPES.get(f.type, "VARCHAR")}) AS "{f.name}"' for f in schema)
    return f"(SELECT {columns}, parse_filename(filename) AS file FROM {source})"


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join(sql_str(str(p)) for p in paths) + "]"


def to_arrow(result: object) -> pa.Table:
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        method = getattr(result, name, None)
        if method is not None:
            return method()
    raise RuntimeError("this DuckDB version cannot return Arrow tables")
