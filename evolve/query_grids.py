"""Each island's MAP-Elites grid from an archive's rows: one role of ``evolve.query.RunArchive`` (its ``grids``),
kept here so that other readers (the UI, over its in-memory copy of ``summary``) ask the same question of their own
table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from evolve.query_model import Elite, GridMap, unravel

if TYPE_CHECKING:
    from evolve.query import RunArchive


def grid_maps(archive: RunArchive, islands: Sequence[int] | None = None, table: str = "summary") -> list[GridMap]:
    """The MAP-Elites grid of each island (default: every island), from one scan of ``table`` (``summary`` or a
    table with its ``program_id, island, cell, fitness, score, iteration`` columns) and the ``migrations`` view.

    A cell's elite is the best program placed there, by its own island or by a migration, in the live database's
    order: higher fitness, then earlier iteration (unique per program in a run).
    """
    wanted = list(archive.islands() if islands is None else islands)
    shape = archive.problem.grid_shape
    n_cells = archive.problem.n_cells
    targets = ", ".join(str(int(i)) for i in wanted) or "NULL"
    rows = archive.rows(
        f"""
        WITH eligible AS (
            -- fitness is non-null exactly for ok, finitely scored programs (see evolve.schema), so the
            -- status column need not be read
            SELECT program_id, island, cell, fitness, score, iteration FROM {table}
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
        """,
        full=False,  # the comment names "programs": without this the archive would build its every-column view
    )
    elites: dict[int, list[Elite]] = {i: [] for i in wanted}
    for r in rows:
        cell = int(r["cell"])
        if not 0 <= cell < n_cells:
            continue  # the problem's grid changed after this row was written
        island, e = int(r["target"]), r["elite"]
        elites[island].append(Elite(island, cell, unravel(cell, shape), str(e["program_id"]), e["score"],
                                    float(e["fitness"]), int(e["iteration"])))
    return [GridMap(island=i, features=archive.problem.features, shape=shape, elites=tuple(elites[i]))
            for i in wanted]
