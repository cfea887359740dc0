"""Read-only queries over one run folder, answered by DuckDB straight from the Parquet segments.

``evolve.archive.read_programs`` loads and deduplicates every row, which is right for rebuilding a database but
too slow to answer "what are the best ten programs" on a million-row archive. Here each question is one SQL query
that reads only the columns it needs (Parquet projection) from every segment, plus the live journal rows.

Duplicates (a crash between a segment's rename and its journal's deletion, an interrupted compaction) are exact
copies of one row, so each query removes them where they could matter: ``top`` drops repeated ids from the head of
its ordering, counts use ``count(DISTINCT program_id)``, and ``map`` is a per-cell maximum that duplicates cannot
change.

Damage: before the first query every segment not yet verified is read in full, every page checksum checked (DuckDB
does not check them, and a footer check misses a corrupt column chunk); files that do not read back are left out
of every answer and named in ``RunArchive.bad_files``, with what they held in ``RunArchive.damage``. Segments are
verified once (``evolve.query_index.VerifiedFiles``), so this costs nothing on later queries. A query that still
fails on a file (damaged after it was verified) makes the archive find and drop it, then retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from evolve.damage import Damage, DamageKind, read_journals, unreadable_segments, verify_run
from evolve.query_grids import grid_maps
from evolve.query_index import (
    INDEX_DIR,
    INDEX_MIN_FILES,
    INDEX_STALE_FILES,
    KINDS,
    PROGRAMS,
    Kind,
    VerifiedFiles,
    cache_dirs,
    find_index,
    segments_sql,
    sql_str,
    to_arrow,
    write_index,
)
from evolve.query_model import (
    Elite,
    GridMap,
    LineageStep,
    ProblemView,
    RunListing,
    problem_view_from_toml,
    read_problem_view,
)
from evolve.run_info import (
    STATS_FILE,
    is_run_dir,
    latest_run,
    list_runs,
    read_info_quietly,
    read_json_quietly,
)
from evolve.schema import ARCHIVE_SCHEMA, ProgramRecord
from evolve.segments import (
    READ_ERRORS,
    SEGMENTS_DIR,
    segment_files,
)

T = TypeVar("T")

__all__ = [
    "INDEX_DIR", "INDEX_MIN_FILES", "INDEX_STALE_FILES", "SUMMARY_COLUMNS", "AmbiguousProgram", "ArchiveQueryError",
    "ArchiveRoot", "Elite", "GridMap", "LineageStep", "ProblemView", "ProgramNotFound", "RunArchive", "RunListing",
    "RunNotFound", "is_run_dir", "problem_view_from_toml", "read_problem_view", "resolve_run",
]

SUMMARY_COLUMNS = ("program_id", "score", "fitness", "status", "island", "iteration", "generation", "mutator")

# Mistakes in a question, not in the files: reported at once, without looking for damage.
_QUERY_MISTAKES = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)


class ArchiveQueryError(Exception):
    """A question about a run could not be answered; the message says why."""


class RunNotFound(ArchiveQueryError):
    pass


class ProgramNotFound(ArchiveQueryError, LookupError):
    pass


class AmbiguousProgram(ArchiveQueryError, LookupError):
    pass


def resolve_run(path: str | Path) -> Path:
    """A run folder, or the newest run under a problem folder of the archive (``archive/<problem>``); runs marked
    ``failed_start`` are never picked."""
    path = Path(path)
    if not path.exists():
        raise RunNotFound(f"{path}: no such run folder")
    if is_run_dir(path):
        return path
    latest = latest_run(path)
    if latest.run_dir is not None:
        return latest.run_dir
    if latest.failed_starts:
        names = ", ".join(str(p) for p in latest.failed_starts[-3:])
        raise RunNotFound(f"{path} holds only failed starts ({names}); pass one of those folders to look at it")
    nested = list_runs(path)
    hint = f"; it holds {len(nested)} run(s), e.g. {nested[-1]}" if nested else ""
    raise RunNotFound(f"{path} is not a run folder (no run.json, segments/ or journal/){hint}")


def _rows(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


class RunArchive:
    """Questions about one run folder. Cheap to create; DuckDB views are built on first use.

    Views: ``programs`` (every column of every row; ``metrics``, ``features`` and ``artifacts`` as maps,
    ``stages`` as a list of structs), ``programs_raw`` (the same as stored: those columns as JSON text), ``summary``
    (per row the small columns plus ``parent_id``, ``llm_cost``, ``llm_tokens``, ``has_prompt`` and ``file``, the
    segment holding the row), ``migrations`` and ``events`` (``events()`` decodes them). Rows may repeat (see the
    module docstring).

    A run writes a segment per 1024 rows, so a million programs are a thousand files, and opening a thousand files
    costs DuckDB most of a second per query. Runs with many segments therefore get an index: the ``summary``
    columns of every segment in one Parquet file, ``<run>/.index/programs.parquet`` (and ``migrations.parquet``),
    sorted by ``program_id``, built on first use and extended when segments accumulate. Segments are immutable, so
    the index records which files it covers; newer files are read directly next to it, and if a covered file
    disappears (compaction) the index is rebuilt. Without write access to the run folder the index lives in
    ``~/.cache/evolve/index``; failing that, queries read the segments directly.

    ``include_journal`` adds rows a live (or killed, not yet recovered) run has journaled but not yet flushed.
    ``verify`` reads every segment not yet verified in full before the first query (see the module docstring);
    without it only files that fail a query are found and dropped.
    """

    def __init__(self, run_dir: str | Path, include_journal: bool = True, use_index: bool = True,
                 verify: bool = True):
        self.run_dir = resolve_run(run_dir)
        self.include_journal = include_journal
        self.use_index = use_index
        self.verify = verify
        self.info: dict[str, Any] = read_info_quietly(self.run_dir)
        self.run_stats: dict[str, Any] = read_json_quietly(self.run_dir / STATS_FILE)
        self.problem = read_problem_view(self.run_dir, self.info)
        self.bad_files: list[tuple[Path, str]] = []
        self.damage: list[Damage] = []  # what verification found, with what each damaged file held
        self._verified = False
        self.index_files: dict[str, Path] = {}  # kind -> index file in use
        self._con: duckdb.DuckDBPyConnection | None = None
        self._full = False
        self._details_ready = False
        self._journal_cache: dict[str, pa.Table] | None = None  # table name -> its journal rows
        self._lazy_views: set[str] = set()  # lazy views built on the current connection

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
        self._lazy_views = set()

    def __enter__(self) -> RunArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if self.verify and not self._verified:
                self.check_files()
            self._con = duckdb.connect()
            try:
                self._con.execute("SET enable_progress_bar = false")
                self._build_views()
            except BaseException:
                self.close()
                raise
        return self._con

    def check_files(self, use_cache: bool = True) -> list[Damage]:
        """Verify every segment (those verified before are skipped unless ``use_cache`` is false) and every
        journal line; record the damage and leave damaged files out of every later query."""
        cache = VerifiedFiles(self.run_dir) if use_cache else None
        damage = verify_run(self.run_dir, known=cache.known if cache else None, on_ok=cache.add if cache else None)
        if cache is not None:
            cache.save()
        self._verified = True
        self.damage = damage
        self._leave_out((self.run_dir / d.file, d.reason) for d in damage
                        if d.kind is not DamageKind.MISSING and d.kind is not DamageKind.JOURNAL)
        self.close()  # views built before the check would still read the damaged files
        return damage

    def _leave_out(self, found: Iterable[tuple[Path, str]]) -> bool:
        """Add each ``(file, reason)`` not yet there to ``bad_files`` (left out of later views); whether any was."""
        known = {p for p, _ in self.bad_files}
        new = [(path, reason) for path, reason in found if path not in known]
        self.bad_files += new
        return bool(new)

    def _files(self, kind: Kind) -> list[Path]:
        files = segment_files(self.run_dir / kind.directory)
        if not self.bad_files:
            return files
        bad = {p for p, _ in self.bad_files}
        return [p for p in files if p not in bad]

    def _segments_sql(self, files: list[Path], schema: pa.Schema) -> str:
        assert self._con is not None
        return segments_sql(self._con, files, schema)

    def _journal(self) -> dict[str, pa.Table]:
        if self._journal_cache is None:
            journals = read_journals(self.run_dir) if self.include_journal else []
            # Bad lines are left out (``check_files`` names them); the rows come as Arrow from the check that read them.
            self._journal_cache = {kind.name: pa.concat_tables([kind.schema.empty_table(), *(
                content.arrow(kind.table) for content in journals)]) for kind in KINDS}
        return self._journal_cache

    def _build_views(self, lazy: bool = False) -> None:
        """``summary`` and ``migrations``, or with ``lazy`` the views built once a question names them (``events``):
        from the index where there is one (cheap to create)."""
        assert self._con is not None
        con = self._con
        kinds = [k for k in KINDS if k.lazy == lazy and k.view not in self._lazy_views]
        if lazy:
            self._lazy_views.update(k.view for k in kinds)
        else:
            self._full = False
        for kind in kinds:
            journal = self._journal()[kind.name]
            files = self._files(kind)
            parts: list[str] = []
            if files:
                index, covered = self._index(kind, files) if self.use_index else (None, set())
                rest = [p for p in files if p.name not in covered]
                if index is not None:
                    parts.append(f"SELECT * FROM read_parquet({sql_str(str(index))})")
                if rest:
                    parts.append(f"SELECT {kind.select}, file FROM {self._segments_sql(rest, kind.schema)}")
            if journal.num_rows:
                con.register(f"{kind.name}_journal", journal)
                parts.append(f"SELECT {kind.select}, '' AS file FROM {kind.name}_journal")
            if not parts:
                con.register(f"{kind.name}_empty", kind.schema.empty_table())
                parts.append(f"SELECT {kind.select}, '' AS file FROM {kind.name}_empty")
            con.execute(f"CREATE OR REPLACE VIEW {kind.view} AS " + " UNION ALL BY NAME ".join(parts))

    def _build_full_view(self) -> None:
        """``programs_raw``: every column of every row (segments and journal) as stored; ``programs``: the same with
        the JSON columns as Arrow maps and structs. Built when a question needs them."""
        assert self._con is not None
        con = self._con
        journal = self._journal()[PROGRAMS.name]
        files = self._files(PROGRAMS)
        parts = []
        if files:
            parts.append(f"SELECT * EXCLUDE (file) FROM {self._segments_sql(files, ARCHIVE_SCHEMA)}")
        if journal.num_rows:
            con.register("programs_journal_full", journal)
            parts.append("SELECT * FROM programs_journal_full")
        if not parts:
            con.register("programs_empty_full", ARCHIVE_SCHEMA.empty_table())
            parts.append("SELECT * FROM programs_empty_full")
        con.execute("CREATE OR REPLACE VIEW programs_raw AS " + " UNION ALL BY NAME ".join(parts))
        con.execute(f"CREATE OR REPLACE VIEW programs AS SELECT * REPLACE ({STRUCTURED_SELECT}) FROM programs_raw")
        self._full = True

    # ------------------------------------------------------------------ the index
    def _index(self, kind: Kind, files: list[Path]) -> tuple[Path | None, set[str]]:
        """An up-to-date index file for ``files`` and the file names it covers; (None, empty) if not worth one."""
        if len(files) < INDEX_MIN_FILES:
            return None, set()
        path, covered, base = find_index(self.run_dir, kind, {p.name for p in files})
        if path is not None:
            self.index_files[kind.name] = path
            return path, covered
        assert self._con is not None
        for directory in cache_dirs(self.run_dir):
            target = directory / f"{kind.name}.parquet"
            written = write_index(self._con, kind, files, target, base, self._segments_sql)
            if written is not None:
                self.index_files[kind.name] = target
                return target, written
        return None, set()

    # ------------------------------------------------------------------ running queries
    def _find_bad_files(self) -> bool:
        """After a failed query: read every segment not yet left out in full (no cache) and leave out the ones that
        do not read back. Unlike ``check_files``, ``damage`` stays as it was."""
        known = {p for p, _ in self.bad_files}
        return self._leave_out((path, reason) for _, path, reason in
                               unreadable_segments(self.run_dir, lambda key, _: self.run_dir / key in known))

    def _attempt(self, work: Callable[[duckdb.DuckDBPyConnection], T], full: bool) -> T:
        """Run ``work`` on the connection; on a read failure, find and drop unreadable segments, then retry."""
        searched = lazy = False
        while True:
            try:
                con = self._connection()
                if full and not self._full:
                    self._build_full_view()
                if lazy:
                    self._build_views(lazy=True)
                return work(con)
            except _QUERY_MISTAKES as exc:
                if isinstance(exc, duckdb.CatalogException) and not lazy:
                    lazy = True  # it may name a view built only when asked for (most questions never read events)
                    continue
                raise ArchiveQueryError(f"query failed: {exc}") from None
            except (duckdb.Error, RuntimeError) as exc:
                # Anything else may be a damaged file (DuckDB reports those many ways: "Out of buffer", invalid
                # input, conversion errors); a damaged index is dropped and rebuilt.
                self.close()
                if self.index_files and self.use_index:
                    self.use_index = False
                    continue
                if not searched:
                    searched = True
                    if self._find_bad_files():
                        continue
                what = f"cannot read {self.run_dir}" if isinstance(exc, duckdb.IOException) else "query failed"
                raise ArchiveQueryError(f"{what}: {exc}") from None

    def query(self, sql: str, params: Sequence[Any] | None = None, full: bool | None = None) -> Any:
        """Run ``sql`` over the views (see the class docstring), skipping unreadable segments; a DuckDB cursor
        (``.arrow()``, ``.df()``, ``.pl()``, ``.fetchall()``).

        The ``programs`` view (every column) is built when ``sql`` names it (``full`` forces or skips that).
        """
        return self._attempt(lambda con: con.execute(sql, list(params or [])), _needs_full(sql, full))

    def arrow(self, sql: str, params: Sequence[Any] | None = None, full: bool | None = None) -> pa.Table:
        return self._attempt(lambda con: to_arrow(con.sql(sql, params=list(params or []))), _needs_full(sql, full))

    def rows(self, sql: str, params: Sequence[Any] | None = None, full: bool | None = None) -> list[dict[str, Any]]:
        return self._attempt(lambda con: _rows(con.execute(sql, list(params or []))), _needs_full(sql, full))

    def tuples(self, sql: str, params: Sequence[Any] | None = None,
               full: bool | None = None) -> list[tuple[Any, ...]]:
        return self._attempt(lambda con: con.execute(sql, list(params or [])).fetchall(), _needs_full(sql, full))

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
        """The run's best: the best promoted program (evolve.oversight); for a run without standings, the fittest."""
        from evolve.oversight.read import best_row

        return best_row(self)

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
            raise ProgramNotFound(f"no program {prefix!r} in {self.run_dir}{self._damage_hint()}")
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
            except READ_ERRORS:
                pass  # compacted or damaged meanwhile: search every segment below
        table = self.arrow("SELECT * FROM programs_raw WHERE program_id = ? LIMIT 1", [full], full=True)
        if not table.num_rows:
            raise ProgramNotFound(f"no program {program_id!r} in {self.run_dir}{self._damage_hint()}")
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
        """The MAP-Elites grid of each island (default: every island), from one scan of the archive (see
        ``evolve.query_grids.grid_maps``)."""
        return grid_maps(self, islands)

    _DETAILS = """
        SELECT DISTINCT program_id, parent_ids[1] AS parent_id, iteration, island, status, score, fitness, mutator,
               created_at, eval_seconds, mutate_seconds, in_process, isolation,
               TRY_CAST(json_extract(llm, '$.cost') AS DOUBLE) AS llm_cost,
               TRY_CAST(json_extract(llm, '$.tokens') AS BIGINT) AS llm_tokens,
               coalesce(prompt, '') <> '' AS has_prompt
        FROM programs_raw
    """

    def details(self) -> str:
        """A temporary table, one row per program, of what plots and statistics need (no code or JSON blobs)."""
        if not self._details_ready:
            self.tuples(f"CREATE OR REPLACE TEMP TABLE details AS {self._DETAILS}", full=True)
            self._details_ready = True
        return "details"

    def history(self) -> pa.Table:
        """One row per program in iteration order: id, parent, iteration, island, status, score, fitness, mutator,
        created_at, timings, isolation and LLM cost and tokens."""
        return self.arrow(f"SELECT * FROM {self.details()} ORDER BY iteration, program_id")

    def table(self, where: str | None = None, columns: Sequence[str] | None = None,
              structured: bool = True) -> pa.Table:
        """Programs (one row each, iteration order) matching the SQL condition ``where``; all columns by default.

        ``metrics``, ``features`` and ``artifacts`` come as maps, ``stages`` as a list of structs (``structured``);
        with ``structured=False`` they are the JSON text the archive stores. ``where`` sees the stored columns.
        ``.to_pandas()`` needs pandas (``pip install 'evolve[pandas]'``); ``polars.from_arrow`` and DuckDB take the
        table as it is."""
        cols = list(columns or ARCHIVE_SCHEMA.names)
        unknown = [c for c in cols if c not in ARCHIVE_SCHEMA.names]
        if unknown:
            raise ArchiveQueryError(f"unknown column(s) {', '.join(unknown)}; columns are "
                                    f"{', '.join(ARCHIVE_SCHEMA.names)}")
        select = ", ".join(f'"{c}"' for c in cols)
        if structured:
            select = ", ".join(f"{STRUCTURED_COLUMNS[c]} AS \"{c}\"" if c in STRUCTURED_COLUMNS else f'"{c}"'
                               for c in cols)
        condition = f"WHERE ({where})" if where else ""
        return self.arrow(
            f"SELECT {select} FROM (SELECT * FROM programs_raw {condition} "
            "QUALIFY row_number() OVER (PARTITION BY program_id ORDER BY iteration) = 1) "
            "ORDER BY iteration, program_id",
            full=True,
        )

    def to_pandas(self, where: str | None = None, columns: Sequence[str] | None = None) -> Any:
        """``table(where, columns)`` as a pandas DataFrame (pandas is an optional extra: ``evolve[pandas]``)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError("pandas is not installed: pip install 'evolve[pandas]' (or pandas); the archive's "
                              "tables are pyarrow Tables, which polars.from_arrow and DuckDB also take") from None
        return self.table(where, columns).to_pandas()

    def records(self, where: str | None = None) -> list[ProgramRecord]:
        return [ProgramRecord.from_row(r) for r in self.table(where, structured=False).to_pylist()]

    def migrations(self) -> pa.Table:
        return self.arrow("SELECT DISTINCT program_id, from_island, to_island, iteration FROM migrations "
                          "ORDER BY iteration, program_id, to_island")

    def events(self, kinds: Sequence[str] | None = None, program_id: str | None = None) -> list[dict[str, Any]]:
        """The run's events (one per ``event_id``: the earliest recorded), by ``created_at`` then ``event_id``, with
        ``data`` decoded; only those of ``kinds`` and about ``program_id`` when given."""
        chosen = None if kinds is None else list(kinds)
        rows = self.arrow(
            "SELECT * FROM (SELECT * EXCLUDE (file) FROM events QUALIFY row_number() OVER (PARTITION BY event_id "
            "ORDER BY created_at, file = '', file) = 1) WHERE (?::VARCHAR[] IS NULL OR "
            "list_contains(?::VARCHAR[], kind)) AND (?::VARCHAR IS NULL OR program_id = ?) ORDER BY created_at, event_id",
            [chosen, chosen, program_id, program_id]).to_pylist()
        try:
            return [{**row, "data": json.loads(row["data"] or "{}")} for row in rows]
        except ValueError as exc:
            raise ArchiveQueryError(f"an event's data in {self.run_dir} is not JSON ({exc})") from None

    def summary(self) -> dict[str, Any]:
        """Statistics of the run from its rows, plus what the loop recorded in run.json and stats.json (see
        ``evolve.query_stats.run_summary``)."""
        from evolve.query_stats import run_summary

        return run_summary(self)

    def listing(self) -> RunListing:
        """A line for ``evolve archive ls``: counts rows (duplicates included) rather than deduplicating."""
        from evolve.query_stats import run_listing

        return run_listing(self)

    def _damage_hint(self) -> str:
        if not self.bad_files and not self.damage:
            return ""
        described = [d.describe() for d in self.damage] or [f"{p}: {why}" for p, why in self.bad_files]
        return f" (damaged files are left out: {'; '.join(described)})"


def _conform_row(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in ARCHIVE_SCHEMA.names}


_STAGE_STRUCT = ("STRUCT(stage VARCHAR, status VARCHAR, seconds DOUBLE, message VARCHAR, metrics MAP(VARCHAR, "
                 "DOUBLE), artifacts MAP(VARCHAR, VARCHAR), isolation VARCHAR, in_process BOOLEAN, node VARCHAR)[]")
# The archive stores these as JSON text (its Parquet format is fixed); readers get Arrow maps and structs.
STRUCTURED_COLUMNS = {
    name: f"TRY_CAST(NULLIF({name}, '')::JSON AS {kind})"
    for name, kind in (("metrics", "MAP(VARCHAR, DOUBLE)"), ("features", "MAP(VARCHAR, DOUBLE)"),
                       ("artifacts", "MAP(VARCHAR, VARCHAR)"), ("stages", _STAGE_STRUCT))
}
STRUCTURED_SELECT = ", ".join(f"{sql} AS {name}" for name, sql in STRUCTURED_COLUMNS.items())
_PROGRAMS_RE = re.compile(r"\bprograms(_raw)?\b", re.IGNORECASE)


def _needs_full(sql: str, full: bool | None) -> bool:
    return bool(_PROGRAMS_RE.search(sql)) if full is None else full

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
