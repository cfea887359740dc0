"""The UI's only door to the archive: every question a page asks about one run (``evolve.ui.store`` holds the runs
under a root folder).

Everything goes through ``evolve.query.RunArchive``'s public methods and its documented ``summary`` view
(``program_id, parent_id, island, iteration, generation, status, score, fitness, cell, mutator, file``), so a change
of the query layer touches this module only. Answers are small: aggregates, samples and pages computed in DuckDB,
never whole columns of a large run.

Live runs: each run has a *version*, a fingerprint of its files (segment and migration names, journal sizes,
``run.json``/``stats.json`` times). A question asked after the version changed reopens the ``RunArchive`` (so new
segments and journal rows are seen) and drops the cached answers; otherwise answers come from a small cache.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from evolve.oversight.read import decisions
from evolve.query import (
    SUMMARY_COLUMNS,
    AmbiguousProgram,
    ArchiveQueryError,
    ProgramNotFound,
    RunArchive,
    RunNotFound,
    resolve_run,
)
from evolve.query_grids import grid_maps
from evolve.schema import ProgramRecord
from evolve.types import NOT_FAILURES
from evolve.ui import oversight as ov
from evolve.ui.reasons import FAILURE_SAMPLE, failure_groups, failure_reason, normalise_message
from evolve.ui.versions import fingerprint, last_write, steering_mark

__all__ = [
    "AmbiguousProgram", "ArchiveQueryError", "ProgramNotFound", "RunNotFound", "RunSource",
    "failure_reason", "normalise_message", "resolve_program",
]

MAX_POINTS = 4000  # scored programs drawn on the progress chart (a uniform sample beyond this)
BEST_BINS = 600
OUTCOME_BINS = 40
CACHE_ENTRIES = 64
T = TypeVar("T")


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _safe(value: Any) -> Any:
    """JSON-ready: non-finite floats become None (browsers' JSON has no NaN)."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# One run


@dataclass(frozen=True)
class ProgramDetail:
    """What a program page shows besides the record itself."""

    record: ProgramRecord
    lineage: list[dict[str, Any]]
    children: list[dict[str, Any]]
    children_total: int


class RunSource:
    """One run folder. Thread-safe: questions about one run are answered one at a time.

    The UI's own queries read ``ui_summary``, a DuckDB temporary table holding the run's ``summary`` rows, made once
    per version on the ``RunArchive``'s connection: a million rows take a fraction of a second to load and then
    answer each question in milliseconds, where every question would otherwise decompress the index file again.
    Answers about immutable things (a program's row, its ancestors) are kept across versions.
    """

    def __init__(self, key: str, run_dir: Path):
        self.key = key
        self.run_dir = run_dir
        self._lock = threading.RLock()
        self._archive: RunArchive | None = None
        self._version = ""
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._stable: dict[tuple[Any, ...], Any] = {}
        self._listing: tuple[str, dict[str, Any]] | None = None
        self._loaded: RunArchive | None = None  # the archive whose connection holds ui_summary
        self._closes = 0  # times closed: a warm-up started before a close stops
        self.last_used = 0.0

    def version(self) -> str:
        return fingerprint(self.run_dir)

    @contextmanager
    def archive(self) -> Iterator[RunArchive]:
        """The run's ``RunArchive``, reopened first if the run's files changed since the last question."""
        with self._lock:
            self.last_used = time.monotonic()
            version = self.version()
            if self._archive is None or version != self._version:
                if self._archive is not None:
                    self._archive.close()
                self._archive = RunArchive(self.run_dir)
                self._version = version
                self._cache.clear()
            yield self._archive

    def cached(self, key: tuple[Any, ...], compute: Callable[[RunArchive], Any], stable: bool = False) -> Any:
        """``compute(archive)``, remembered until the run changes (or for good when ``stable``)."""
        with self.archive() as archive:
            return self._memo(archive, key, compute, stable)

    def _memo(self, a: RunArchive, key: tuple[Any, ...], compute: Callable[[RunArchive], Any],
              stable: bool = False) -> Any:
        """``cached`` inside a question already holding the archive (never reopens it halfway through)."""
        store = self._stable if stable else self._cache
        if key not in store:
            value = compute(a)
            if len(store) >= CACHE_ENTRIES:
                store.pop(next(iter(store)))
            store[key] = value
        return store[key]

    @property
    def is_open(self) -> bool:
        return self._archive is not None

    def close(self) -> None:
        with self._lock:
            if self._archive is not None:
                self._archive.close()
                self._archive = None
            self._loaded = None
            self._closes += 1
            self._cache.clear()

    def _on_table(self, a: RunArchive, ask: Callable[[], T]) -> T:
        """``ask()``, a question over ``ui_summary``, made first on this archive's connection. Loaded once per
        version; the archive may have reopened its connection since (after skipping a damaged segment), taking
        the table with it: then it is loaded again and the question asked again."""
        if self._loaded is not a:
            self._load(a)
        try:
            return ask()
        except ArchiveQueryError as exc:
            if "ui_summary" not in str(exc):
                raise
            self._load(a)
            return ask()

    def _load(self, a: RunArchive) -> None:
        # parent_hash: finding the children of a few programs compares integers (_CHILD_OF).
        # Insertion order is not kept: a quarter less work on a million rows, and every question orders its answer
        # (the index is sorted by program_id, so lookups by id still skip most of the table).
        a.query("SET preserve_insertion_order = false")
        try:
            a.query(f"CREATE OR REPLACE TEMP TABLE ui_summary AS SELECT {_SUMMARY_COLUMNS}, "
                    "hash(parent_id) AS parent_hash FROM summary")
        finally:
            a.query("RESET preserve_insertion_order")
        self._loaded = a

    def _sql(self, a: RunArchive, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._on_table(a, lambda: a.tuples(sql.format(S="ui_summary"), list(params)))

    def _dicts(self, a: RunArchive, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._on_table(a, lambda: a.rows(sql.format(S="ui_summary"), list(params)))

    # -- the run as a whole ---------------------------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        """A line of the runs list. Kept per version apart from the other answers, and a run opened only for it
        is closed again, so that listing many runs holds no connection open."""
        version = self.version()
        if self._listing is None or self._listing[0] != version:
            was_open = self.is_open
            with self.archive() as a:
                found = a.listing()
            if not was_open:
                self.close()
            self._listing = (version, {
                "key": self.key, "run_id": found.run_id, "problem": found.problem, "state": found.state,
                "programs": found.programs, "best_score": _finite(found.best_score),
                "best_program": found.best_program, "created_at": found.created_at, "mutator": found.mutator,
                "bad_files": list(found.bad_files)})
        return {**self._listing[1], "last_write": last_write(self.run_dir)}

    def header(self) -> dict[str, Any]:
        """What a page title needs, from the run's metadata files only (no query): a page shows at once."""
        with self.archive() as a:
            return {"key": self.key, "run_id": a.run_id, "problem": a.problem.name,
                    "score_metric": a.problem.score_metric, "direction": a.problem.direction,
                    "state": str(a.info.get("state", "")), "created_at": a.info.get("created_at")}

    def warm(self, questions: Sequence[Callable[[], Any]]) -> None:
        """Ask ``questions`` (this run's methods) in the background, in order, while a browser fetches a page's
        scripts: the page's own requests then find their answers cached, or being computed. Errors are left to
        the page's requests to report."""

        closes = self._closes

        def ask() -> None:
            for question in questions:
                with self._lock:  # a close() between the check and the question would have it reopen the run
                    if self._closes != closes:
                        return  # closed meanwhile (the server stops, or the run was idle): reopening is not wanted
                    with suppress(ArchiveQueryError, OSError):
                        question()
                # A page's request waiting for the run's lock takes it now (a lock is not fair: this thread would
                # take it again first), so that its answer is drawn while the next one is computed.
                time.sleep(0.002)

        threading.Thread(target=ask, name=f"ui-warm-{self.key}", daemon=True).start()

    def _statuses(self, a: RunArchive) -> dict[str, int]:
        """Programs per status (rows, so a rare duplicated row counts twice: cheap on a million rows)."""
        return self._memo(a, ("statuses",), lambda _: {str(s): int(n) for s, n in self._sql(
            a, "SELECT coalesce(status, '') AS s, count(*) AS n FROM {S} GROUP BY s ORDER BY n DESC, s")})

    def overview(self) -> dict[str, Any]:
        def compute(a: RunArchive) -> dict[str, Any]:
            p = a.problem
            statuses = self._statuses(a)
            last = self._sql(a, "SELECT max(iteration) FROM {S}")[0][0]
            return _safe({
                "key": self.key, "run_dir": str(self.run_dir), "run_id": a.run_id, "problem": p.name,
                "score_metric": p.score_metric, "direction": p.direction, "language": p.language,
                "state": str(a.info.get("state", "")), "mutator": str(a.info.get("mutator", "")),
                "created_at": a.info.get("created_at"), "settings": a.info.get("settings", {}),
                "programs": sum(statuses.values()), "statuses": statuses, "islands": a.islands(),
                "best": self._best(a), "best_visible": self._top(a), "seed": self._seed(a), "last_iteration": last,
                "standings": ov.standing_counts(self._standings(a), sum(statuses.values())),
                "oversight": bool(self._standings(a)), "strategies": self._has_strategies(a),
                "features": [{"name": f.name, "min": f.min, "max": f.max, "bins": f.bins} for f in p.features],
                "bad_files": [str(path) for path, _ in a.bad_files],
                "loop": {k: v for k, v in a.run_stats.items() if isinstance(v, int | float | str)},
            })

        out = dict(self.cached(("overview",), compute))
        out["last_write"] = last_write(self.run_dir)
        out["version"] = self._version
        return out

    def _best(self, a: RunArchive) -> dict[str, Any] | None:
        """The run's best as the CLI and the report mean it (``evolve.oversight.read.best_row``): the fittest
        promoted program; for a run recorded before oversight (no standings), the fittest program."""
        return self._memo(a, ("best",), self._promoted_best)

    def _promoted_best(self, a: RunArchive) -> dict[str, Any] | None:
        known = self._standings(a)
        if not known:
            return self._top(a)
        promoted = [pid for pid, s in known.items() if s == "promoted"]
        if not promoted:
            return None
        return self._fittest(a, f"program_id IN ({', '.join('?' * len(promoted))})", promoted)

    def _top(self, a: RunArchive) -> dict[str, Any] | None:
        """The fittest program whatever its standing (asked by the overview and, without standings, ``_best``)."""
        return self._memo(a, ("top",), lambda _: self._fittest(a))

    def _fittest(self, a: RunArchive, where: str = "TRUE", params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._dicts(a, f"SELECT {_ROW_COLUMNS} FROM {{S}} WHERE fitness IS NOT NULL AND {where} "
                              "ORDER BY fitness DESC, iteration LIMIT 1", params)
        return _safe(rows[0]) if rows else None

    def _seed(self, a: RunArchive) -> dict[str, Any] | None:
        """``RunArchive.seed()``, answered from ``ui_summary``."""
        return self._memo(a, ("seed",), lambda _: next(iter(self._dicts(
            a, f"SELECT {_ROW_COLUMNS} FROM {{S}} WHERE iteration = 0 ORDER BY program_id LIMIT 1")), None))

    # -- oversight and strategies (evolve.ui.oversight) ----------------------------------------------------------

    def _standings(self, a: RunArchive) -> dict[str, str]:
        return self._memo(a, ("standings",), ov.standing_map)

    def _decisions(self, a: RunArchive) -> dict[str, Any]:
        return self._memo(a, ("decisions",), decisions)

    def _has_strategies(self, a: RunArchive) -> bool:
        return self._memo(a, ("has_strategies",), lambda _: bool(a.events(kinds=["strategy", "scratchpad"])))

    def audit(self, page: int = 0, per_page: int = 25) -> dict[str, Any]:
        page, per_page = max(0, page), min(200, max(1, per_page))

        def compute(a: RunArchive) -> dict[str, Any]:
            return _safe(ov.audit_page(a, sum(self._statuses(a).values()), page, per_page, self._standings(a),
                                       self._decisions(a)))

        return self.cached(("audit", page, per_page, steering_mark(self.run_dir)), compute)

    def program_oversight(self, program_id: str) -> dict[str, Any]:
        return self.cached(("program_oversight", program_id), lambda a: _safe(ov.program_oversight(a, program_id)))

    def strategies(self) -> dict[str, Any]:
        return self.cached(("strategies",), lambda a: _safe(ov.strategies_view(a, self._has_strategies(a))))

    def progress(self) -> dict[str, Any]:
        """Scored programs (a sample of at most ``MAX_POINTS``) and the best score so far (binned, exact at bin
        ends), for the score-over-iterations chart."""

        def compute(a: RunArchive) -> dict[str, Any]:
            scored, last = self._sql(a, "SELECT count(*), max(iteration) FROM {S} WHERE fitness IS NOT NULL")[0]
            scored, last = int(scored or 0), int(last or 0)
            stride = max(1, math.ceil(scored / MAX_POINTS))
            sample = self._sql(
                a, "SELECT program_id, iteration, island, score FROM {S} WHERE fitness IS NOT NULL "
                   "AND hash(program_id) % ?::UBIGINT = 0 ORDER BY iteration LIMIT ?", [stride, MAX_POINTS * 2])
            width = max(1, math.ceil((last + 1) / BEST_BINS))
            bins = self._sql(
                a, "SELECT iteration // ? AS b, arg_max(struct_pack(program_id, iteration, score), fitness) "
                   "FROM {S} WHERE fitness IS NOT NULL GROUP BY b ORDER BY b", [width])
            best: list[dict[str, Any]] = []
            sign = a.problem.sign
            for _, top in bins:
                score = _finite(top["score"])
                if score is None:
                    continue
                if not best or score * sign > best[-1]["score"] * sign:
                    best.append({"iteration": int(top["iteration"]), "score": score,
                                 "program_id": top["program_id"]})
            return {"points": [{"id": pid, "iteration": int(it), "island": int(isl or 0), "score": _finite(s)}
                               for pid, it, isl, s in sample],
                    "stride": stride, "scored": scored, "best": best, "last_iteration": last,
                    "direction": a.problem.direction, "score_metric": a.problem.score_metric}

        return self.cached(("progress",), compute)

    def outcomes(self) -> dict[str, Any]:
        """Programs per status in up to ``OUTCOME_BINS`` equal spans of iterations."""

        def compute(a: RunArchive) -> dict[str, Any]:
            last = int(self._sql(a, "SELECT coalesce(max(iteration), 0) FROM {S}")[0][0])
            width = max(1, math.ceil((last + 1) / OUTCOME_BINS))
            rows = self._sql(a, "SELECT iteration // ? AS b, coalesce(status, '') AS s, count(*) FROM {S} "
                                "GROUP BY b, s ORDER BY b, s", [width])
            bins: dict[int, dict[str, int]] = {}
            for b, status, n in rows:
                bins.setdefault(int(b), {})[str(status)] = int(n)
            return {"width": width, "bins": [{"start": b * width, "end": min(last, (b + 1) * width - 1),
                                              "counts": counts} for b, counts in sorted(bins.items())]}

        return self.cached(("outcomes",), compute)

    def maps(self) -> list[dict[str, Any]]:
        """Each island's grid as a 2-D heatmap: x = the last feature, y = the first; with more than two features
        each shown cell holds the fittest elite over the other axes."""

        def compute(a: RunArchive) -> list[dict[str, Any]]:
            out = []
            known = self._standings(a)
            for grid in self._on_table(a, lambda: grid_maps(a, table="ui_summary")):
                dims = len(grid.features)
                xi, yi = (dims - 1, 0) if dims >= 2 else (0 if dims else None, None)
                cells: dict[tuple[int, int], dict[str, Any]] = {}
                for e in grid.elites:
                    x = e.coords[xi] if xi is not None else 0
                    y = e.coords[yi] if yi is not None else 0
                    held = cells.get((x, y))
                    if held is None or e.fitness > held["fitness"]:
                        cells[(x, y)] = {"x": x, "y": y, "program_id": e.program_id, "score": _finite(e.score),
                                         "fitness": _finite(e.fitness), "iteration": e.iteration,
                                         "cell": e.cell, "standing": known.get(e.program_id, "candidate")}
                out.append({"island": grid.island, "coverage": grid.coverage, "n_cells": grid.n_cells,
                            "elites": len(grid.elites), "x": _axis(grid.features, xi), "y": _axis(grid.features, yi),
                            "width": grid.shape[xi] if xi is not None else 1,
                            "height": grid.shape[yi] if yi is not None else 1,
                            "cells": sorted(cells.values(), key=lambda c: (c["y"], c["x"]))})
            return out

        return self.cached(("maps",), compute)

    def failures(self, sample: int = FAILURE_SAMPLE) -> dict[str, Any]:
        """Failures grouped by status and normalised reason, over the most recent ``sample`` failures; counts per
        status over every program (``evolve.ui.reasons.failure_groups``)."""

        def compute(a: RunArchive) -> dict[str, Any]:
            statuses = {s: n for s, n in self._statuses(a).items() if s not in NOT_FAILURES}
            return failure_groups(a, statuses, sample)

        return self.cached(("failures", sample), compute)

    def programs(self, page: int = 0, per_page: int = 50, status: str = "", island: int | None = None,
                 order: str = "recent", standing: str = "") -> dict[str, Any]:
        """A page of programs, each with its standing and any person's decision; ``standing`` keeps one standing
        (``evolve archive top --standing``); ``auto``: promoted programs once the run has standings, else every
        program (the run page's default, as ``evolve archive top``'s)."""
        page, per_page = max(0, page), min(200, max(1, per_page))
        standing = standing if standing in (*ov.STANDINGS, "auto") else ""
        conditions, params = ["TRUE"], []
        if status:
            conditions.append("status = ?")
            params.append(status)
        if island is not None:
            conditions.append("island = ?")
            params.append(island)
        sort = "fitness DESC NULLS LAST, iteration" if order == "best" else "iteration DESC"
        where = " AND ".join(conditions)

        def compute(a: RunArchive) -> dict[str, Any]:
            known = self._standings(a)
            chosen = ("promoted" if known else "") if standing == "auto" else standing
            kept = ov.standing_condition(known, chosen)
            full = f"{where} AND ({kept[0]})" if kept else where
            args = [*params, *(kept[1] if kept else [])]
            total = int(self._sql(a, f"SELECT count(*) FROM {{S}} WHERE {full}", args)[0][0])
            rows = self._dicts(a, f"SELECT program_id, parent_id, island, iteration, generation, status, score, "
                                  f"mutator FROM {{S}} WHERE {full} ORDER BY {sort}, program_id LIMIT ? OFFSET ?",
                               [*args, per_page, page * per_page])
            seen: set[str] = set()
            unique = [r for r in rows if not (r["program_id"] in seen or seen.add(r["program_id"]))]
            made = self._decisions(a) if known else {}
            for r in unique:
                r["standing"] = known.get(r["program_id"], "candidate")
                r["decision"] = made[r["program_id"]].decision if r["program_id"] in made else ""
            return _safe({"page": page, "per_page": per_page, "total": total, "rows": unique,
                          "standing": chosen, "oversight": bool(known)})

        return self.cached(("programs", page, per_page, status, island, order, standing), compute)

    # -- genealogy -----------------------------------------------------------------------------------------------

    def lineage(self, program_id: str, max_depth: int = 500) -> list[dict[str, Any]]:
        """Ancestors of a program, itself first."""
        with self.archive() as a:
            return self._lineage(a, program_id, max_depth)

    def _lineage(self, a: RunArchive, program_id: str, max_depth: int = 500) -> list[dict[str, Any]]:
        key = ("lineage", program_id, max_depth)
        if key in self._stable:  # rows never change: a complete chain is kept for good
            return self._stable[key]
        steps: list[dict[str, Any]] = []
        seen: set[str] = set()
        current: str | None = program_id
        while current is not None and current not in seen and len(steps) < max_depth:
            seen.add(current)
            found = self._dicts(a, f"SELECT {_NODE_COLUMNS} FROM {{S}} WHERE program_id = ? LIMIT 1", [current])
            if not found:  # a parent missing from a damaged archive: show where the chain breaks, keep nothing
                steps.append({"program_id": current, "parent_id": None, "iteration": -1, "generation": -1,
                              "status": "missing", "score": None, "mutator": "", "island": -1})
                return _safe(steps)
            steps.append(found[0])
            current = found[0]["parent_id"]
        result = _safe(steps)
        return self._memo(a, key, lambda _: result, stable=True)

    def tree(self, root: str | None = None, limit: int = 150, per_node: int = 6) -> dict[str, Any]:
        """A bounded subtree: ``root`` (default the seed), the path from it to the best program, and breadth-first
        the fittest ``per_node`` children of each shown node, up to ``limit`` nodes. Each node says how many
        children it has in all, so the page can offer to expand a node (re-root there)."""
        limit, per_node = min(1000, max(2, limit)), min(50, max(1, per_node))

        def compute(a: RunArchive) -> dict[str, Any]:
            best = self._best(a)
            best_lineage = self._lineage(a, best["program_id"]) if best else []
            best_chain = [s["program_id"] for s in reversed(best_lineage)]
            if root:
                root_id = a.resolve_id(root)
            else:
                seed = self._seed(a)
                root_id = best_chain[0] if best_chain else (seed["program_id"] if seed else None)
            if root_id is None:
                return {"root": None, "nodes": [], "best_path": [], "ancestors": [], "truncated": False}
            root_lineage = self._lineage(a, root_id)
            ancestors = [s["program_id"] for s in reversed(root_lineage)][:-1]
            path = best_chain[best_chain.index(root_id):] if root_id in best_chain else [root_id]
            # The path's rows are in the lineages just read (less a parent missing from a damaged archive).
            known_rows = {r["program_id"]: r for r in (*best_lineage, *root_lineage) if r["status"] != "missing"}
            nodes = {pid: known_rows[pid] for pid in path if pid in known_rows}
            frontier, truncated = [root_id], False
            while frontier and len(nodes) < limit:
                children = self._dicts(
                    a, f"SELECT {_NODE_COLUMNS} FROM {{S}} WHERE {_CHILD_OF} QUALIFY row_number() OVER (PARTITION "
                       "BY parent_id ORDER BY fitness DESC NULLS LAST, iteration, program_id) <= ? "
                       "ORDER BY fitness DESC NULLS LAST, iteration", [frontier, frontier, per_node])
                frontier = []
                for row in children:
                    if row["program_id"] in nodes:
                        if row["program_id"] in path:
                            frontier.append(row["program_id"])
                        continue
                    if len(nodes) >= limit:
                        truncated = True
                        break
                    nodes[row["program_id"]] = row
                    frontier.append(row["program_id"])
            ids = list(nodes)
            counts = dict(self._sql(a, f"SELECT parent_id, count(DISTINCT program_id) FROM {{S}} WHERE {_CHILD_OF} "
                                       "GROUP BY parent_id", [ids, ids]))
            out = []
            for pid, row in nodes.items():
                row = _safe(row)
                row["children"] = int(counts.get(pid, 0))
                if pid == root_id:
                    row["parent_id"] = None  # the tree's root, whatever its own parent
                out.append(row)
            shown: dict[str, int] = {}
            for row in out:
                if row["parent_id"]:
                    shown[row["parent_id"]] = shown.get(row["parent_id"], 0) + 1
            known = self._standings(a)
            for row in out:
                row["hidden"] = max(0, row["children"] - shown.get(row["program_id"], 0))
                row["standing"] = known.get(row["program_id"], "candidate")
            on_best = bool(best_chain) and path[-1] == best_chain[-1]
            return {"root": root_id, "nodes": out, "best_path": path if on_best else [],
                    "best": best["program_id"] if best else None, "ancestors": ancestors,
                    "truncated": truncated or any(r["hidden"] for r in out), "limit": limit}

        return self.cached(("tree", root, limit, per_node), compute)

    # -- one program ---------------------------------------------------------------------------------------------

    def resolve(self, prefix: str) -> str:
        with self.archive() as a:
            return a.resolve_id(prefix)

    def record(self, program_id: str) -> ProgramRecord:
        return self.cached(("record", program_id), lambda a: a.program(program_id), stable=True)

    def detail(self, program_id: str, max_lineage: int = 500, max_children: int = 50) -> ProgramDetail:
        record = self.record(program_id)
        lineage = self.lineage(record.program_id, max_lineage)

        def compute(a: RunArchive) -> ProgramDetail:
            total = int(self._sql(a, "SELECT count(DISTINCT program_id) FROM {S} WHERE parent_id = ?",
                                  [record.program_id])[0][0])
            children = self._dicts(
                a, "SELECT DISTINCT program_id, island, iteration, status, score, fitness FROM {S} "
                   "WHERE parent_id = ? ORDER BY fitness DESC NULLS LAST, iteration LIMIT ?",
                [record.program_id, max_children])
            return ProgramDetail(record, lineage, [_safe(c) for c in children], total)

        return self.cached(("detail", record.program_id), compute)

    def compare_series(self) -> dict[str, Any]:
        """Best score so far against iteration (binned), for the runs-comparison chart."""
        data = self.progress()
        over = self.overview()
        return {"key": self.key, "run_id": over["run_id"], "problem": over["problem"],
                "direction": data["direction"], "score_metric": data["score_metric"], "best": data["best"],
                "last_iteration": max(data["last_iteration"], over["last_iteration"] or 0)}


def _axis(features: Sequence[Any], i: int | None) -> dict[str, Any] | None:
    if i is None:
        return None
    f = features[i]
    return {"name": f.name, "min": f.min, "max": f.max, "bins": f.bins}


_ROW_COLUMNS = ", ".join(SUMMARY_COLUMNS)  # RunArchive.top()'s and seed()'s columns
# Rows whose parent is one of a list of ids (the list given twice): the parents' hashes are compared first, so that
# DuckDB compares strings and reads the other columns for the few matching rows only (a string IN list makes it read
# every column of every row).
_CHILD_OF = "parent_hash = ANY([hash(x) FOR x IN ?::VARCHAR[]]) AND parent_id = ANY(?::VARCHAR[])"
_NODE_COLUMNS = "program_id, parent_id, island, iteration, generation, status, score, fitness, mutator"
_SUMMARY_COLUMNS = "program_id, parent_id, island, iteration, generation, status, score, fitness, cell, mutator"


def resolve_program(run_path: str | Path, prefix: str) -> tuple[Path, str, str]:
    """``(run folder, full program id, status)`` of a program given by a unique id prefix (journal rows too)."""
    run_dir = resolve_run(run_path)
    with RunArchive(run_dir) as archive:
        full = archive.resolve_id(prefix)
        rows = archive.rows("SELECT status FROM summary WHERE program_id = ? LIMIT 1", [full])
    return run_dir, full, str(rows[0]["status"] if rows else "")
