"""Turning an archive back into a database (``ProgramDatabase.rebuild``): the columnar work.

Every cell's elite is found from the archive's columns at once (``cell_winners``), and each elite's last children
(``recent_children``) likewise, so a rebuild decodes only the rows of the cell winners.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evolve.mutators.base import Attempt
from evolve.schema import ARCHIVE_SCHEMA, ProgramRecord
from evolve.types import Status

if TYPE_CHECKING:
    from evolve.database import Migration

ATTEMPT_SUMMARY_LIMIT = 300


class RebuildError(ValueError):
    """An archive cannot be turned back into a database. ``unknown_migrations`` names the programs that migration
    events point at but that are not eligible archived rows (their rows were lost); otherwise the placements do not
    fit the islands and grid given (the settings or the problem changed)."""

    def __init__(self, message: str, unknown_migrations: Sequence[str] = ()):
        super().__init__(message)
        self.unknown_migrations = tuple(unknown_migrations)


def summary_text(edit_error: str, stages: list[dict[str, Any]]) -> str:
    """One line on why a child fared as it did: the edit error, else the last stage's message."""
    text = edit_error
    if not text and stages:
        text = str(stages[-1].get("message", ""))
    text = " ".join(text.split())
    return text if len(text) <= ATTEMPT_SUMMARY_LIMIT else text[: ATTEMPT_SUMMARY_LIMIT - 3] + "..."


def as_table(programs: pa.Table | Iterable[ProgramRecord]) -> pa.Table:
    if isinstance(programs, pa.Table):
        return programs.combine_chunks()
    return pa.Table.from_pylist([r.to_row() for r in programs], schema=ARCHIVE_SCHEMA)


def as_moves(migrations: pa.Table | Iterable[Migration] | None) -> pa.Table:
    """``program_id`` and ``to_island`` of each migration event."""
    if migrations is None:
        migrations = []
    if not isinstance(migrations, pa.Table):
        migrations = pa.table(
            {"program_id": [m.program_id for m in migrations], "to_island": [m.to_island for m in migrations]},
            schema=pa.schema([("program_id", pa.string()), ("to_island", pa.int64())]),
        )
    return migrations.select(["program_id", "to_island"])


def cell_winners(table: pa.Table, moves: pa.Table, n_islands: int, n_cells: int) -> list[tuple[int, int, int]]:
    """``(island, cell, row of table)`` of every occupied cell after all placements."""
    fitness = table.column("fitness")
    eligible = pc.and_(
        pc.and_(pc.equal(table.column("status"), Status.OK.value), pc.is_finite(fitness)),
        pc.is_valid(table.column("cell")),
    )
    rows = np.flatnonzero(eligible.fill_null(False).to_numpy(zero_copy_only=False))
    ids = table.column("program_id").take(pa.array(rows, pa.int64()))
    # Placements by migration point at the migrated program's eligible row.
    position = pc.index_in(moves.column("program_id"), value_set=ids).to_numpy(zero_copy_only=False)
    position = np.asarray(position, dtype=float)
    if np.isnan(position).any():
        unknown = sorted(set(np.asarray(moves.column("program_id").to_pylist(), dtype=object)[np.isnan(position)]))
        raise RebuildError(f"migration events name {len(unknown)} program(s) that are not eligible archived programs "
                           f"(e.g. {', '.join(unknown[:3])})", unknown)
    moved = position.astype(np.int64)
    row = np.concatenate([rows, rows[moved]])
    island = np.concatenate([
        table.column("island").to_numpy(zero_copy_only=False)[rows],
        moves.column("to_island").to_numpy(zero_copy_only=False),
    ]).astype(np.int64)
    cell = table.column("cell").to_numpy(zero_copy_only=False)[row].astype(np.int64)
    if len(row) and (island.min() < 0 or island.max() >= n_islands or cell.min() < 0 or cell.max() >= n_cells):
        raise RebuildError(f"archived placements out of range for {n_islands} islands x {n_cells} cells")
    fit = fitness.to_numpy(zero_copy_only=False)[row].astype(float)
    iteration = table.column("iteration").to_numpy(zero_copy_only=False)[row].astype(np.int64)
    id_rank = np.empty(table.num_rows, dtype=np.int64)
    id_rank[pc.sort_indices(table.column("program_id")).to_numpy()] = np.arange(table.num_rows)
    slot = island * n_cells + cell
    # The database's total order within each slot: fitness desc, iteration asc, program_id asc.
    order = np.lexsort((id_rank[row], iteration, -fit, slot))
    slot_sorted = slot[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = slot_sorted[1:] != slot_sorted[:-1]
    best = order[first]
    return [(int(i), int(c), int(r)) for i, c, r in zip(island[best], cell[best], row[best], strict=True)]


def recent_children(table: pa.Table, parents: list[str], k: int) -> dict[str, list[Attempt]]:
    """The last ``k`` children (by iteration, oldest first) of each of ``parents``."""
    if k <= 0 or not parents or table.num_rows == 0:
        return {}
    lists = table.column("parent_ids")
    has_parent = pc.fill_null(pc.greater(pc.list_value_length(lists), 0), False)
    first_parent = pc.list_element(pc.if_else(has_parent, lists, pa.scalar(None, lists.type)), 0)
    mask = pc.is_in(first_parent, value_set=pa.array(parents, pa.string()))
    children = table.select(["iteration", "edit", "edit_error", "status", "score", "stages"]).append_column(
        "parent", first_parent
    ).filter(mask)
    if children.num_rows == 0:
        return {}
    children = children.sort_by([("parent", "ascending"), ("iteration", "descending")])
    parent = np.asarray(children.column("parent").to_pylist(), dtype=object)
    starts = np.flatnonzero(np.concatenate([[True], parent[1:] != parent[:-1]]))
    group_start = starts[np.searchsorted(starts, np.arange(len(parent)), side="right") - 1]
    keep = np.flatnonzero(np.arange(len(parent)) - group_start < k)
    recent: dict[str, list[Attempt]] = {}
    for row in children.take(pa.array(keep[::-1].copy(), pa.int64())).to_pylist():  # oldest first
        attempt = Attempt(
            edit=row["edit"] or "",
            status=row["status"] or "",
            score=row["score"],
            summary=summary_text(row["edit_error"] or "", json.loads(row["stages"] or "[]")),
        )
        recent.setdefault(row["parent"], []).append(attempt)
    return recent
