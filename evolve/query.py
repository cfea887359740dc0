"""Read-only queries over one run folder, answered by DuckDB straight from the Parquet segments.

``evolve.archive.read_programs`` loads and deduplicates every row, which is right for rebuilding a database but
too slow to answer "what are the best ten programs" on a million-row archive. Here each question is one SQL query
that reads only the columns it needs (Parquet projection) from every segment, plus the live journal rows.

Duplicates (a crash between a segment's rename and its journal's deletion, an interrupted compaction) are exact
copies of one row, so each query removes them where they could matter: ``top`` drops repeated ids from the head of
its ordering, counts use ``count(DISTINCT program_id)``, and ``map`` is a per-cell maximum that duplicates cannot
change.

A segment that is not valid Parquet is skipped: the query is retried without it and ``RunArchive.bad_files`` names
it with the reason, so callers can warn and still show the rest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from evolve.archive import (
    JOURNAL_DIR,
    MIGRATION_SCHEMA,
    MIGRATIONS_DIR,
    PROBLEM_SNAPSHOT,
    RUN_INFO,
    SEGMENT_SUFFIX,
    SEGMENTS_DIR,
    STATS_FILE,
    _journal_rows,
    _migrations_table,
    _programs_table,
    list_runs,
)
from evolve.problem import FeatureDim
from evolve.schema import ARCHIVE_SCHEMA, ProgramRecord

T = TypeVar("T")

SUMMARY_COLUMNS = ("program_id", "score", "fitness", "status", "island", "iteration", "generation", "mutator")

_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.list_(pa.string()): "VARCHAR[]",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("ms", tz="UTC"): "TIMESTAMPTZ",
}


class ArchiveQueryError(Exception):
    """A question about a run could not be answered; the message says why."""


class RunNotFound(ArchiveQueryError):
    pass


class ProgramNotFound(ArchiveQueryError, LookupError):
    pass


class AmbiguousProgram(ArchiveQueryError, LookupError):
    pass


@dataclass(frozen=True)
class ProblemView:
    """What the archive tools need from a run's problem definition (read from the run's snapshot)."""

    name: str
    score_metric: str = "score"
    direction: str = "maximize"
    features: tuple[FeatureDim, ...] = ()
    language: str = "python"

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "maximize" else -1.0

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(f.bins for f in self.features) or (1,)

    @property
    def n_cells(self) -> int:
        return math.prod(self.grid_shape)


@dataclass(frozen=True)
class Elite:
    """The program holding one MAP-Elites cell of one island."""

    island: int
    cell: int
    coords: tuple[int, ...]
    program_id: str
    score: float | None
    fitness: float
    iteration: int


@dataclass(frozen=True)
class GridMap:
    """One island's MAP-Elites grid as the run left it."""

    island: int
    features: tuple[FeatureDim, ...]
    shape: tuple[int, ...]
    elites: tuple[Elite, ...]

    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)

    @property
    def coverage(self) -> float:
        return len(self.elites) / self.n_cells if self.n_cells else 0.0

    def best(self) -> Elite | None:
        return max(self.elites, key=lambda e: (e.fitness, -e.iteration), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "island": self.island,
            "shape": list(self.shape),
            "features": [{"name": f.name, "min": f.min, "max": f.max, "bins": f.bins} for f in self.features],
            "coverage": self.coverage,
            "cells": [
                {"cell": e.cell, "coords": list(e.coords), "program_id": e.program_id, "score": e.score,
                 "fitness": e.fitness, "iteration": e.iteration}
                for e in self.elites
            ],
        }


@dataclass(frozen=True)
class LineageStep:
    """One program in an ancestor chain."""

    program_id: str
    parent_id: str | None
    iteration: int
    generation: int
    status: str
    score: float | None
    mutator: str
    island: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "program_id": self.program_id, "parent_id": self.parent_id, "iteration": self.iteration,
            "generation": self.generation, "status": self.status, "score": self.score, "mutator": self.mutator,
            "island": self.island,
        }


@dataclass(frozen=True)
class RunListing:
    """One line of ``evolve archive ls``: read from metadata only (run.json, stats.json, Parquet footers)."""

    run_dir: Path
    run_id: str
    problem: str
    programs: int
    best_score: float | None
    best_program: str | None
    created_at: float | None
    state: str
    mutator: str
    bad_files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir), "run_id": self.run_id, "problem": self.problem, "programs": self.programs,
            "best_score": self.best_score, "best_program": self.best_program, "created_at": self.created_at,
            "state": self.state, "mutator": self.mutator, "bad_files": list(self.bad_files),
        }


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (RUN_INFO, SEGMENTS_DIR, JOURNAL_DIR))


def resolve_run(path: str | Path) -> Path:
    """A run folder, or the newest run under a problem folder of the archive (``archive/<problem>``)."""
    path = Path(path)
    if not path.exists():
        raise RunNotFound(f"{path}: no such run folder")
    if is_run_dir(path):
        return path
    runs = [p for p in sorted(path.iterdir()) if is_run_dir(p)] if path.is_dir() else []
    if runs:
        return max(runs, key=_created_at)
    nested = list_runs(path)
    hint = f"; it holds {len(nested)} run(s), e.g. {nested[-1]}" if nested else ""
    raise RunNotFound(f"{path} is not a run folder (no run.json, segments/ or journal/){hint}")


def _created_at(run_dir: Path) -> float:
    info = _read_json(run_dir / RUN_INFO)
    value = info.get("created_at")
    return float(value) if isinstance(value, int | float) else run_dir.stat().st_mtime


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _parquet_files(directory: Path) -> list[Path]:
    # The archive's own rule: visible *.parquet only (temporary files are hidden and end otherwise). Names are
    # sorted as strings: a thousand Path comparisons cost more than the query they feed.
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / n for n in sorted(n for n in names if n.endswith(SEGMENT_SUFFIX) and not n.startswith("."))]


def read_problem_view(run_dir: Path, info: dict[str, Any] | None = None) -> ProblemView:
    """The problem as the run saw it: its ``problem.toml`` snapshot, else the folder named in ``run.json``."""
    info = info if info is not None else _read_json(run_dir / RUN_INFO)
    name = str(info.get("problem") or run_dir.parent.name)
    snapshot = run_dir / PROBLEM_SNAPSHOT
    if snapshot.is_file():
        try:
            return problem_view_from_toml(tomllib.loads(snapshot.read_text(encoding="utf-8")), name)
        except (tomllib.TOMLDecodeError, OSError, TypeError, ValueError, KeyError):
            pass
    root = info.get("problem_root")
    if root:
        try:
            from evolve.openevolve import load_any_problem

            problem, _ = load_any_problem(root)
            return ProblemView(name=problem.name, score_metric=problem.score.metric,
                               direction=problem.score.direction, features=problem.features,
                               language=problem.language)
        except Exception:  # noqa: BLE001 - the folder may have moved or changed; the archive is still readable
            pass
    return ProblemView(name=name)


def problem_view_from_toml(data: dict[str, Any], default_name: str = "") -> ProblemView:
    score = data.get("score") or {}
    features = tuple(
        FeatureDim(name=str(f["name"]), min=float(f["min"]), max=float(f["max"]), bins=int(f["bins"]),
                   metric=str(f.get("metric", "")))
        for f in data.get("features") or []
    )
    language = str(data.get("language") or "")
    if not language:
        from evolve.problem import LANGUAGES

        language = LANGUAGES.get(Path(str(data.get("seed", ""))).suffix, "text")
    return ProblemView(name=str(data.get("name") or default_name), score_metric=str(score.get("metric", "score")),
                       direction=str(score.get("direction", "maximize")), features=features, language=language)


def _to_arrow(result: Any) -> pa.Table:
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        method = getattr(result, name, None)
        if method is not None:
            return method()
    raise RuntimeError("this DuckDB version cannot return Arrow tables")


def _rows(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(_sql_str(str(p)) for p in paths) + "]"


# Index: the small columns of every row, in one file sorted by program_id (see ``RunArchive``). Bump the version
# when its columns change; an index of another version is rebuilt.
INDEX_VERSION = "1"
INDEX_DIR = ".index"
INDEX_MIN_FILES = 32  # fewer segments than this are read directly
INDEX_STALE_FILES = 32  # rebuild once this many segments are newer than the index
_INDEX_KEY = b"evolve_index"

SUMMARY_SELECT = """
    program_id, parent_ids[1] AS parent_id, island, iteration, generation, status, score, fitness, cell, mutator
"""
MIGRATION_SELECT = "program_id, from_island, to_island, iteration, created_at"


@dataclass(frozen=True)
class _Kind:
    """One kind of archive file (programs or migrations) and how the index summarizes its rows."""

    name: str
    directory: str
    schema: pa.Schema
    select: str


_PROGRAMS = _Kind("programs", SEGMENTS_DIR, ARCHIVE_SCHEMA, SUMMARY_SELECT)
_MIGRATIONS = _Kind("migrations", MIGRATIONS_DIR, MIGRATION_SCHEMA, MIGRATION_SELECT)


class RunArchive:
    """Questions about one run folder. Cheap to create; DuckDB views are built on first use.

    Views: ``programs`` (every column of every row), ``summary`` (per row the small columns plus ``parent_id``,
    ``llm_cost``, ``llm_tokens``, ``has_prompt`` and ``file``, the segment holding the row) and ``migrations``.
    Rows may repeat (see the module docstring).

    A run writes a segment per 1024 rows, so a million programs are a thousand files, and opening a thousand files
    costs DuckDB most of a second per query. Runs with many segments therefore get an index: the ``summary``
    columns of every segment in one Parquet file, ``<run>/.index/programs.parquet`` (and ``migrations.parquet``),
    sorted by ``program_id``, built on first use and extended when segments accumulate. Segments are immutable, so
    the index records which files it covers; newer files are read directly next to it, and if a covered file
    disappears (compaction) the index is rebuilt. Without write access to the run folder the index lives in
    ``~/.cache/evolve/index``; failing that, queries read the segments directly.

    ``include_journal`` adds rows a live (or killed, not yet recovered) run has journaled but not yet flushed.
    """

    def __init__(self, run_dir: str | Path, include_journal: bool = True, use_index: bool = True):
        self.run_dir = resolve_run(run_dir)
        self.include_journal = include_journal
        self.use_index = use_index
        self.info: dict[str, Any] = _read_json(self.run_dir / RUN_INFO)
        self.run_stats: dict[str, Any] = _read_json(self.run_dir / STATS_FILE)
        self.problem = read_problem_view(self.run_dir, self.info)
        self.bad_files: list[tuple[Path, str]] = []
        self.index_files: dict[str, Path] = {}  # kind -> index file in use
        self._con: duckdb.DuckDBPyConnection | None = None
        self._full = False
        self._details_ready = False
        self._journal_cache: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id") or self.run_dir.name)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._journal_cache = None
        self._details_ready = False

    def __enter__(self) -> RunArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duckdb.connect()
            try:
                self._con.execute("SET enable_progress_bar = false")
                self._build_views()
            except BaseException:
                self.close()
                raise
        return self._con

    def _files(self, kind: _Kind) -> list[Path]:
        files = _parquet_files(self.run_dir / kind.directory)
        if not self.bad_files:
            return files
        bad = {p for p, _ in self.bad_files}
        return [p for p in files if p not in bad]

    def _segments_sql(self, files: list[Path], schema: pa.Schema) -> str:
        """A subquery with every ``schema`` column (typed nulls where a file lacks one) plus ``file``."""
        assert self._con is not None
        source = f"read_parquet({_sql_list(files)}, filename = true)"
        present = {row[0] for row in self._con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        if not set(schema.names) <= present:
            # DuckDB takes the columns of the first file only; an older segment may lack newer columns.
            source = f"read_parquet({_sql_list(files)}, filename = true, union_by_name = true)"
            present = {row[0] for row in self._con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        return f"(SELECT {_select_list(schema, present)}, parse_filename(filename) AS file FROM {source})"

    def _journal(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self._journal_cache is None:
            self._journal_cache = _journal_rows(self.run_dir) if self.include_journal else ([], [])
        return self._journal_cache

    def _build_views(self) -> None:
        """``summary`` and ``migrations``: from the index where there is one (cheap to create)."""
        assert self._con is not None
        con = self._con
        self._full = False
        journal_programs, journal_migrations = self._journal()
        for kind, journal, make in ((_PROGRAMS, journal_programs, _programs_table),
                                    (_MIGRATIONS, journal_migrations, _migrations_table)):
            files = self._files(kind)
            parts: list[str] = []
            if files:
                index, covered = self._index(kind, files) if self.use_index else (None, set())
                rest = [p for p in files if p.name not in covered]
                if index is not None:
                    parts.append(f"SELECT * FROM read_parquet({_sql_str(str(index))})")
                if rest:
                    parts.append(f"SELECT {kind.select}, file FROM {self._segments_sql(rest, kind.schema)}")
            if journal:
                con.register(f"{kind.name}_journal", make(journal))
                parts.append(f"SELECT {kind.select}, '' AS file FROM {kind.name}_journal")
            if not parts:
                con.register(f"{kind.name}_empty", kind.schema.empty_table())
                parts.append(f"SELECT {kind.select}, '' AS file FROM {kind.name}_empty")
            view = "summary" if kind is _PROGRAMS else "migrations"
            con.execute(f"CREATE OR REPLACE VIEW {view} AS " + " UNION ALL BY NAME ".join(parts))

    def _build_full_view(self) -> None:
        """``programs``: every column of every row (segments and journal); built when a question needs it."""
        assert self._con is not None
        con = self._con
        journal = self._journal()[0]
        files = self._files(_PROGRAMS)
        parts = []
        if files:
            parts.append(f"SELECT * EXCLUDE (file) FROM {self._segments_sql(files, ARCHIVE_SCHEMA)}")
        if journal:
            con.register("programs_journal_full", _programs_table(journal))
            parts.append("SELECT * FROM programs_journal_full")
        if not parts:
            con.register("programs_empty_full", ARCHIVE_SCHEMA.empty_table())
            parts.append("SELECT * FROM programs_empty_full")
        con.execute("CREATE OR REPLACE VIEW programs AS " + " UNION ALL BY NAME ".join(parts))
        self._full = True

    # ------------------------------------------------------------------ the index
    def _index_candidates(self, kind: _Kind) -> list[Path]:
        import hashlib

        digest = hashlib.sha256(str(self.run_dir.resolve()).encode()).hexdigest()[:20]
        cache = Path.home() / ".cache" / "evolve" / "index" / digest
        return [self.run_dir / INDEX_DIR / f"{kind.name}.parquet", cache / f"{kind.name}.parquet"]

    def _index(self, kind: _Kind, files: list[Path]) -> tuple[Path | None, set[str]]:
        """An up-to-date index file for ``files`` and the file names it covers; (None, empty) if not worth one."""
        if len(files) < INDEX_MIN_FILES:
            return None, set()
        names = {p.name for p in files}
        base: tuple[Path, set[str]] | None = None
        for path in self._index_candidates(kind):
            covered = _index_coverage(path)
            if covered is None or not covered <= names:
                continue  # missing, of another version, or covering files compacted away since: rebuild
            if len(names - covered) < INDEX_STALE_FILES:
                self.index_files[kind.name] = path
                return path, covered
            base = base or (path, covered)
        for path in self._index_candidates(kind):
            covered = self._write_index(kind, files, path, base)
            if covered is not None:
                self.index_files[kind.name] = path
                return path, covered
        return None, set()

    def _write_index(self, kind: _Kind, files: list[Path], path: Path,
                     base: tuple[Path, set[str]] | None) -> set[str] | None:
        """Write an index of ``files``; from ``base`` (an older index) plus the newer files when there is one."""
        assert self._con is not None
        if base is not None:
            rest = [p for p in files if p.name not in base[1]]
            source = (f"SELECT * FROM read_parquet({_sql_str(str(base[0]))}) UNION ALL BY NAME "
                      f"SELECT {kind.select}, file FROM {self._segments_sql(rest, kind.schema)}")
        else:
            source = f"SELECT {kind.select}, file FROM {self._segments_sql(files, kind.schema)}"
        table = _to_arrow(self._con.sql(f"SELECT * FROM ({source}) ORDER BY program_id"))
        covered = sorted(p.name for p in files)
        meta = json.dumps({"version": INDEX_VERSION, "covered": covered}).encode()
        table = table.replace_schema_metadata({_INDEX_KEY: meta})
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
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

    # ------------------------------------------------------------------ running queries
    def _find_bad_files(self, deep: bool) -> bool:
        """Check every segment; record the unreadable ones. ``deep`` reads the data, not just the footer."""
        found = False
        for kind in (_PROGRAMS, _MIGRATIONS):
            for path in self._files(kind):
                try:
                    if deep:
                        pq.read_table(path)
                    elif "program_id" not in pq.read_schema(path).names:
                        raise ValueError("not an evolve archive file (no program_id column)")
                except FileNotFoundError:
                    continue  # compacted away meanwhile
                except (pa.ArrowException, OSError, ValueError) as exc:
                    self.bad_files.append((path, f"{type(exc).__name__}: {exc}"))
                    found = True
        return found

    def _attempt(self, work: Callable[[duckdb.DuckDBPyConnection], T], full: bool) -> T:
        """Run ``work`` on the connection; on a read failure, find and drop unreadable segments, then retry."""
        checked = 0  # 1: footers checked, 2: every file read in full
        while True:
            try:
                con = self._connection()
                if full and not self._full:
                    self._build_full_view()
                return work(con)
            except (duckdb.IOException, duckdb.InvalidInputException, duckdb.InternalException) as exc:
                found = False
                while not found and checked < 2:
                    checked += 1
                    found = self._find_bad_files(deep=checked == 2)
                if not found:
                    raise ArchiveQueryError(f"cannot read {self.run_dir}: {exc}") from None
                self.close()  # rebuild the views without the bad files
            except duckdb.Error as exc:
                raise ArchiveQueryError(f"query failed: {exc}") from None

    def query(self, sql: str, params: Sequence[Any] | None = None, full: bool = False) -> Any:
        """Run ``sql`` over the views (see the class docstring), skipping unreadable segments; a DuckDB cursor.

        ``full`` makes the ``programs`` view (every column) available too.
        """
        return self._attempt(lambda con: con.execute(sql, list(params or [])), full)

    def arrow(self, sql: str, params: Sequence[Any] | None = None, full: bool = False) -> pa.Table:
        return self._attempt(lambda con: _to_arrow(con.sql(sql, params=list(params or []))), full)

    def rows(self, sql: str, params: Sequence[Any] | None = None, full: bool = False) -> list[dict[str, Any]]:
        return self._attempt(lambda con: _rows(con.execute(sql, list(params or []))), full)

    def tuples(self, sql: str, params: Sequence[Any] | None = None, full: bool = False) -> list[tuple[Any, ...]]:
        return self._attempt(lambda con: con.execute(sql, list(params or [])).fetchall(), full)

    # ------------------------------------------------------------------ questions
    def count(self) -> int:
        """Distinct programs (every iteration outcome, rejected edits included)."""
        return int(self.tuples("SELECT count(DISTINCT program_id) FROM summary")[0][0])

    def rows_stored(self) -> int:
        """Rows on disk, duplicates included: a cheap size for listings."""
        return int(self.tuples("SELECT count(*) FROM summary")[0][0])

    def status_counts(self) -> dict[str, int]:
        rows = self.tuples("SELECT coalesce(status, '') AS s, count(DISTINCT program_id) AS n FROM summary "
                           "GROUP BY s ORDER BY n DESC, s")
        return {str(s): int(n) for s, n in rows}

    def islands(self) -> list[int]:
        n = self.info.get("settings", {}).get("islands")
        if isinstance(n, int) and n > 0:
            return list(range(n))
        found = self.tuples("SELECT DISTINCT island FROM summary WHERE island IS NOT NULL ORDER BY island")
        return [int(r[0]) for r in found] or [0]

    def top(self, n: int = 10, island: int | None = None, where: str | None = None) -> list[dict[str, Any]]:
        """The ``n`` fittest programs (best first; ties: earliest iteration), one row per program.

        ``where`` is an SQL condition over the ``summary`` columns (e.g. ``"mutator LIKE 'llm:%'"``).
        """
        conditions = ["fitness IS NOT NULL"]  # null unless ok and finitely scored (see evolve.schema)
        params: list[Any] = []
        if island is not None:
            conditions.append("island = ?")
            params.append(island)
        if where:
            conditions.append(f"({where})")
        limit = n
        while True:
            rows = self.rows(
                f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM summary WHERE {' AND '.join(conditions)} "
                "ORDER BY fitness DESC, iteration ASC LIMIT ?", [*params, limit])
            unique: dict[str, dict[str, Any]] = {}
            for row in rows:
                unique.setdefault(row["program_id"], row)
            if len(unique) >= n or len(rows) < limit:
                return list(unique.values())[:n]
            limit *= 4  # the head held duplicates: look further

    def best(self) -> dict[str, Any] | None:
        found = self.top(1)
        return found[0] if found else None

    def seed(self) -> dict[str, Any] | None:
        rows = self.rows(f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM summary WHERE iteration = 0 "
                         "ORDER BY program_id LIMIT 1")
        return rows[0] if rows else None

    def resolve_id(self, prefix: str) -> str:
        """The full id of the program whose id starts with ``prefix``."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise ProgramNotFound("empty program id")
        # A range instead of starts_with(): the index is sorted by id, so its row-group statistics prune the scan.
        found = [r[0] for r in self.tuples(
            "SELECT DISTINCT program_id FROM summary WHERE program_id >= ? AND program_id < ? "
            "ORDER BY program_id LIMIT 6", [prefix, prefix + "\U0010ffff"])]
        if not found:
            raise ProgramNotFound(f"no program {prefix!r} in {self.run_dir}")
        if len(found) > 1:
            more = ", ..." if len(found) > 5 else ""
            raise AmbiguousProgram(f"program id {prefix!r} is ambiguous in {self.run_dir}: "
                                   f"{', '.join(found[:5])}{more}")
        return str(found[0])

    def raw_row(self, program_id: str) -> dict[str, Any]:
        """One program's archive row as stored (JSON columns as text); ``program_id`` may be a unique prefix."""
        full = self.resolve_id(program_id)
        where = self.tuples("SELECT file FROM summary WHERE program_id = ? LIMIT 1", [full])
        if where and where[0][0]:
            path = self.run_dir / SEGMENTS_DIR / where[0][0]
            try:  # one file instead of the whole archive
                table = pq.read_table(path, filters=[("program_id", "=", full)])
                if table.num_rows:
                    return _conform_row(table.slice(0, 1).to_pylist()[0])
            except (pa.ArrowException, OSError, ValueError):
                pass  # compacted or damaged meanwhile: search every segment below
        table = self.arrow("SELECT * FROM programs WHERE program_id = ? LIMIT 1", [full], full=True)
        if not table.num_rows:
            raise ProgramNotFound(f"no program {program_id!r} in {self.run_dir}")
        return table.to_pylist()[0]

    def program(self, program_id: str) -> ProgramRecord:
        """The full record of one program (``program_id`` may be a unique prefix)."""
        return ProgramRecord.from_row(self.raw_row(program_id))

    def _node(self, program_id: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT program_id, parent_id, iteration, generation, status, score, mutator, island "
                         "FROM summary WHERE program_id = ? LIMIT 1", [program_id])
        return rows[0] if rows else None

    def lineage(self, program_id: str, max_depth: int = 1_000_000) -> list[LineageStep]:
        """The ancestor chain of a program: the program itself first, the seed (or a missing parent) last."""
        steps: list[LineageStep] = []
        seen: set[str] = set()
        current: str | None = self.resolve_id(program_id)
        while current is not None and current not in seen and len(steps) < max_depth:
            seen.add(current)
            r = self._node(current)
            if r is None:  # a parent absent from the archive (a damaged segment): show where the chain breaks
                steps.append(LineageStep(current, None, -1, -1, "missing", None, "", -1))
                break
            steps.append(LineageStep(current, r["parent_id"], int(r["iteration"] or 0), int(r["generation"] or 0),
                                     str(r["status"] or ""), r["score"], str(r["mutator"] or ""),
                                     int(r["island"] or 0)))
            current = r["parent_id"]
        return steps

    def grid(self, island: int) -> GridMap:
        """The elites of one island: per cell, the best program placed there by its island or by a migration."""
        return self.grids([island])[0]

    def grids(self, islands: Sequence[int] | None = None) -> list[GridMap]:
        """The MAP-Elites grid of each island (default: every island), from one scan of the archive.

        A cell's elite is the best program placed there, by its own island or by a migration, in the live
        database's order: higher fitness, then earlier iteration (unique per program in a run).
        """
        wanted = list(self.islands() if islands is None else islands)
        shape = self.problem.grid_shape
        n_cells = math.prod(shape)
        targets = ", ".join(str(int(i)) for i in wanted) or "NULL"
        rows = self.rows(
            f"""
            WITH eligible AS (
                -- fitness is non-null exactly for ok, finitely scored programs (see evolve.schema), so the
                -- status column need not be read
                SELECT program_id, island, cell, fitness, score, iteration FROM summary
                WHERE fitness IS NOT NULL AND cell IS NOT NULL
            ),
            moved AS (SELECT DISTINCT program_id, to_island FROM migrations WHERE to_island IN ({targets})),
            placed AS (
                SELECT island AS target, * FROM eligible WHERE island IN ({targets})
                UNION ALL
                SELECT m.to_island AS target, e.* FROM eligible e JOIN moved m ON e.program_id = m.program_id
            )
            SELECT target, cell, arg_max({{'program_id': program_id, 'score': score, 'fitness': fitness,
                                           'iteration': iteration}}, (fitness, -iteration)) AS elite
            FROM placed GROUP BY target, cell ORDER BY target, cell
            """
        )
        elites: dict[int, list[Elite]] = {i: [] for i in wanted}
        for r in rows:
            cell = int(r["cell"])
            if not 0 <= cell < n_cells:
                continue  # the problem's grid changed after this row was written
            island, e = int(r["target"]), r["elite"]
            elites[island].append(Elite(island, cell, _unravel(cell, shape), str(e["program_id"]), e["score"],
                                        float(e["fitness"]), int(e["iteration"])))
        return [GridMap(island=i, features=self.problem.features, shape=shape, elites=tuple(elites[i]))
                for i in wanted]

    _DETAILS = """
        SELECT DISTINCT program_id, parent_ids[1] AS parent_id, iteration, island, status, score, fitness, mutator,
               created_at, eval_seconds, mutate_seconds, in_process, isolation,
               TRY_CAST(json_extract(llm, '$.cost') AS DOUBLE) AS llm_cost,
               TRY_CAST(json_extract(llm, '$.tokens') AS BIGINT) AS llm_tokens,
               coalesce(prompt, '') <> '' AS has_prompt
        FROM programs
    """

    def _details(self) -> str:
        """A temporary table, one row per program, of what plots and statistics need (no code or JSON blobs)."""
        if not self._details_ready:
            self.tuples(f"CREATE OR REPLACE TEMP TABLE details AS {self._DETAILS}", full=True)
            self._details_ready = True
        return "details"

    def history(self) -> pa.Table:
        """One row per program in iteration order: id, parent, iteration, island, status, score, fitness, mutator,
        created_at, timings, isolation and LLM cost and tokens."""
        return self.arrow(f"SELECT * FROM {self._details()} ORDER BY iteration, program_id")

    def table(self, where: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Programs (one row each, iteration order) matching the SQL condition ``where``; all columns by default."""
        cols = list(columns or ARCHIVE_SCHEMA.names)
        unknown = [c for c in cols if c not in ARCHIVE_SCHEMA.names]
        if unknown:
            raise ArchiveQueryError(f"unknown column(s) {', '.join(unknown)}; columns are "
                                    f"{', '.join(ARCHIVE_SCHEMA.names)}")
        select = ", ".join(f'"{c}"' for c in cols)
        condition = f"WHERE ({where})" if where else ""
        return self.arrow(
            f"SELECT {select} FROM (SELECT * FROM programs {condition} "
            "QUALIFY row_number() OVER (PARTITION BY program_id ORDER BY iteration) = 1) "
            "ORDER BY iteration, program_id",
            full=True,
        )

    def records(self, where: str | None = None) -> list[ProgramRecord]:
        return [ProgramRecord.from_row(r) for r in self.table(where).to_pylist()]

    def migrations(self) -> pa.Table:
        return self.arrow("SELECT DISTINCT program_id, from_island, to_island, iteration FROM migrations "
                          "ORDER BY iteration, program_id, to_island")

    def summary(self) -> dict[str, Any]:
        """Statistics of the run from its rows, plus what the loop recorded in run.json and stats.json."""
        statuses = self.status_counts()
        total = sum(statuses.values())
        details = self._details()
        agg = self.rows(
            f"""
            SELECT avg(eval_seconds) AS mean_eval_seconds, avg(mutate_seconds) AS mean_mutate_seconds,
                   max(iteration) AS last_iteration, epoch(min(created_at)) AS first_at,
                   epoch(max(created_at)) AS last_at,
                   count(*) FILTER (WHERE in_process) AS in_process,
                   count(*) FILTER (WHERE has_prompt) AS llm_answers,
                   sum(llm_tokens) AS llm_tokens, sum(llm_cost) AS llm_cost
            FROM {details}
            """
        )[0]
        isolation = self.rows(f"SELECT isolation, count(*) AS n FROM {details} "
                              "WHERE isolation IS NOT NULL AND isolation <> '' GROUP BY isolation ORDER BY n DESC")
        mutators = self.rows(
            f"""
            SELECT c.mutator, count(*) AS children, count(*) FILTER (WHERE c.status = 'ok') AS ok,
                   count(*) FILTER (WHERE c.fitness > p.fitness) AS improved
            FROM {details} c LEFT JOIN {details} p ON p.program_id = c.parent_id
            WHERE c.iteration > 0
            GROUP BY c.mutator ORDER BY children DESC, c.mutator
            """
        )
        best = self.best()
        seed = self.seed()
        coverage = {str(g.island): g.coverage for g in self.grids()}
        failures = sum(v for k, v in statuses.items() if k not in ("ok", "duplicate"))  # duplicates: not evaluated
        first, last = agg["first_at"], agg["last_at"]
        span = float(last - first) if first is not None and last is not None else None
        improvement = None
        if best and seed and best["score"] is not None and seed["score"] is not None:
            improvement = best["score"] - seed["score"]
        return {
            "run_dir": str(self.run_dir),
            "run_id": self.run_id,
            "problem": self.problem.name,
            "score_metric": self.problem.score_metric,
            "direction": self.problem.direction,
            "state": self.info.get("state", ""),
            "mutator": self.info.get("mutator", ""),
            "settings": self.info.get("settings", {}),
            "created_at": self.info.get("created_at"),
            "programs": total,
            "evaluated": total - statuses.get("invalid_edit", 0),
            "statuses": statuses,
            "failure_rate": failures / total if total else 0.0,
            "best": best,
            "seed": seed,
            "improvement": improvement,
            "last_iteration": agg["last_iteration"],
            "span_seconds": span,
            "mean_eval_seconds": agg["mean_eval_seconds"],
            "mean_mutate_seconds": agg["mean_mutate_seconds"],
            "in_process": int(agg["in_process"] or 0),
            "isolation": {r["isolation"]: int(r["n"]) for r in isolation},
            "coverage": coverage,
            "mutators": [
                {"mutator": r["mutator"] or "", "children": int(r["children"]), "ok": int(r["ok"]),
                 "improved": int(r["improved"])} for r in mutators
            ],
            "llm": {"answers": int(agg["llm_answers"] or 0), "tokens": int(agg["llm_tokens"] or 0),
                    "cost": float(agg["llm_cost"] or 0.0)},
            "loop": self.run_stats,
            "bad_files": [str(p) for p, _ in self.bad_files],
        }

    def listing(self) -> RunListing:
        """A line for ``evolve archive ls``: counts rows (duplicates included) rather than deduplicating."""
        try:
            programs = self.rows_stored()
        except ArchiveQueryError:
            programs = 0
        best_score = self.run_stats.get("best_score")
        best_program = self.run_stats.get("best_program")
        if best_score is None and programs:
            try:
                best = self.best()
            except ArchiveQueryError:
                best = None
            if best is not None:
                best_score, best_program = best["score"], best["program_id"]
        return RunListing(run_dir=self.run_dir, run_id=self.run_id, problem=self.problem.name, programs=programs,
                          best_score=best_score, best_program=best_program,
                          created_at=self.info.get("created_at"), state=str(self.info.get("state", "")),
                          mutator=str(self.info.get("mutator", "")),
                          bad_files=tuple(str(p) for p, _ in self.bad_files))


def _select_list(schema: pa.Schema, present: set[str]) -> str:
    # Segments from an older schema lack newer columns: they read as typed nulls.
    cols = []
    for f in schema:
        if f.name in present:
            cols.append(f'"{f.name}"')
        else:
            cols.append(f'CAST(NULL AS {_DUCK_TYPES.get(f.type, "VARCHAR")}) AS "{f.name}"')
    return ", ".join(cols)


def _conform_row(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in ARCHIVE_SCHEMA.names}


def _index_coverage(path: Path) -> set[str] | None:
    """Segment names an index file covers; None if it is missing, unreadable or of another version."""
    try:
        meta = pq.read_schema(path).metadata or {}
        data = json.loads(meta[_INDEX_KEY])
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None
    if data.get("version") != INDEX_VERSION:
        return None
    return set(data.get("covered", []))


def _unravel(cell: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    coords = []
    for size in reversed(shape):
        coords.append(cell % size)
        cell //= size
    return tuple(reversed(coords))


@dataclass(frozen=True)
class ArchiveRoot:
    """Every run under an archive root (``archive/<problem>/<run-id>/``), or one run folder."""

    root: Path
    runs: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def scan(cls, root: str | Path) -> ArchiveRoot:
        root = Path(root)
        if is_run_dir(root):
            return cls(root, (root,))
        runs = list_runs(root)
        if not runs and root.is_dir():  # a problem folder of the archive
            runs = [p for p in sorted(root.iterdir()) if is_run_dir(p)]
        return cls(root, tuple(runs))
