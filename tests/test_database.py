"""The in-memory MAP-Elites database: placement, sampling, inspirations, migration, rebuild, memory."""

from __future__ import annotations

import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from evolve.archive import ArchiveWriter, iter_records, read_migrations, read_programs
from evolve.database import (
    AddStatus,
    AllExcludedError,
    EmptyDatabaseError,
    Migration,
    ProgramDatabase,
    cell_of,
)
from evolve.problem import FeatureDim
from evolve.schema import ProgramRecord
from evolve.types import program_id_for


def rec(
    name: str,
    *,
    island: int = 0,
    cell: int | None = 0,
    fitness: float | None = 1.0,
    iteration: int = 1,
    status: str = "ok",
    parent: str | None = None,
    code: str | None = None,
    edit: str = "",
) -> ProgramRecord:
    code = code if code is not None else f"# program {name}\n"
    return ProgramRecord(
        program_id=program_id_for(code),
        parent_ids=(parent,) if parent else (),
        island=island,
        iteration=iteration,
        generation=1,
        code=code,
        status=status,
        edit=edit,
        score=None if fitness is None else -fitness,  # a "minimize" problem: fitness = -score
        fitness=fitness,
        metrics={} if fitness is None else {"time": -fitness},
        cell=cell,
        stages=[{"stage": "evaluate", "status": status, "message": f"stage message {name}"}],
        artifacts={"stdout": "x" * 10_000},
    )


def pid(name: str) -> str:
    return program_id_for(f"# program {name}\n")


# -- placement -----------------------------------------------------------------------------------------------------


def test_add_outcomes_and_dedup_set() -> None:
    db = ProgramDatabase(2, (3, 4))
    assert db.add(rec("a", cell=5, fitness=1.0, iteration=1)) is AddStatus.NEW_CELL
    assert db.add(rec("b", cell=5, fitness=2.0, iteration=2)) is AddStatus.IMPROVED
    assert db.add(rec("c", cell=5, fitness=2.0, iteration=3)) is AddStatus.NOT_IMPROVED  # tie keeps incumbent
    assert db.add(rec("d", cell=5, fitness=0.5, iteration=4)) is AddStatus.NOT_IMPROVED
    assert db.add(rec("e", cell=5, fitness=9.0, status="timeout")) is AddStatus.NOT_ELIGIBLE
    assert db.add(rec("f", cell=5, fitness=None)) is AddStatus.NOT_ELIGIBLE
    assert db.add(rec("g", cell=5, fitness=math.nan)) is AddStatus.NOT_ELIGIBLE
    assert db.add(rec("h", cell=None, fitness=9.0)) is AddStatus.NOT_ELIGIBLE
    assert db.add(rec("i", island=1, cell=5, fitness=0.1)) is AddStatus.NEW_CELL  # islands are separate grids
    assert db.grid(0) == {5: pid("b")}
    assert all(pid(n) in db for n in "abcdefghi")
    assert "zzz" not in db and len(db) == 9
    with pytest.raises(ValueError, match="island"):
        db.add(rec("j", island=2))
    with pytest.raises(ValueError, match="cell"):
        db.add(rec("k", cell=12))


def test_ties_go_to_the_earlier_iteration_whatever_the_arrival_order() -> None:
    late_first = ProgramDatabase(1, (1,))
    late_first.add(rec("late", fitness=1.0, iteration=9))
    assert late_first.add(rec("early", fitness=1.0, iteration=2)) is AddStatus.IMPROVED
    assert late_first.grid(0) == {0: pid("early")}


def test_grids_do_not_depend_on_arrival_order() -> None:
    rng = np.random.default_rng(1)
    records = [
        rec(str(i), island=int(rng.integers(3)), cell=int(rng.integers(12)), fitness=round(float(rng.normal()), 1),
            iteration=i)
        for i in range(400)
    ]
    reference = ProgramDatabase(3, (3, 4))
    for r in records:
        reference.add(r)
    for seed in range(3):
        shuffled = ProgramDatabase(3, (3, 4))
        for i in np.random.default_rng(seed).permutation(len(records)):
            shuffled.add(records[int(i)])
        assert shuffled.snapshot() == reference.snapshot()


def test_cell_of_is_c_order_over_feature_bins() -> None:
    features = (FeatureDim("a", 0.0, 1.0, 4), FeatureDim("b", 0.0, 10.0, 5))
    assert cell_of(features, {"a": 0.6, "b": 9.0}) == 2 * 5 + 4
    assert cell_of(features, {"a": -3.0, "b": 0.0}) == 0
    assert cell_of(features, {"a": 0.6}) is None


# -- sampling ------------------------------------------------------------------------------------------------------


def _ranked_db(n: int, exploitation: float) -> ProgramDatabase:
    db = ProgramDatabase(1, (n,), exploitation=exploitation)
    for c in range(n):
        db.add(rec(str(c), cell=c, fitness=float(c), iteration=c))  # rank r holds program str(n - 1 - r)
    return db


def _rank_frequencies(db: ProgramDatabase, n: int, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rank_of = {pid(str(n - 1 - r)): r for r in range(n)}
    counts = np.zeros(n)
    for _ in range(draws):
        counts[rank_of[db.sample_parent(0, rng).program_id]] += 1
    return counts / draws


@pytest.mark.parametrize("exploitation", [1.0, 0.0, 0.7])
def test_parent_sampling_mixes_rank_weights_and_uniform(exploitation: float) -> None:
    n, draws = 10, 20_000
    rank_weights = 1.0 / np.arange(1, n + 1)
    expected = exploitation * rank_weights / rank_weights.sum() + (1 - exploitation) / n
    observed = _rank_frequencies(_ranked_db(n, exploitation), n, draws, seed=3)
    # Binomial standard error is < 0.0034 here; 0.015 is > 4 sigma.
    assert np.max(np.abs(observed - expected)) < 0.015


def test_sampling_is_deterministic_for_a_seed() -> None:
    db = _ranked_db(30, 0.7)
    first = [db.sample_parent(0, np.random.default_rng(11)).program_id for _ in range(1)]
    rng_a, rng_b, rng_c = (np.random.default_rng(s) for s in (11, 11, 12))
    a = [db.sample_parent(0, rng_a).program_id for _ in range(200)]
    b = [db.sample_parent(0, rng_b).program_id for _ in range(200)]
    c = [db.sample_parent(0, rng_c).program_id for _ in range(200)]
    assert a == b and a != c and a[0] == first[0]


def test_empty_island_falls_back_to_best_elite_anywhere() -> None:
    db = ProgramDatabase(3, (4,))
    with pytest.raises(EmptyDatabaseError):
        db.sample_parent(0, np.random.default_rng(0))
    db.add(rec("low", island=1, cell=0, fitness=1.0))
    db.add(rec("high", island=2, cell=1, fitness=5.0))
    parent = db.sample_parent(0, np.random.default_rng(0))
    assert (parent.program_id, parent.island) == (pid("high"), 2)


def test_program_view_contents() -> None:
    db = ProgramDatabase(1, (2,))
    db.add(rec("a", fitness=2.0))
    view = db.sample_parent(0, np.random.default_rng(0))
    assert view.code == "# program a\n" and view.score == -2.0 and view.metrics == {"time": -2.0}
    assert view.status == "ok" and view.generation == 1 and view.island == 0
    assert len(view.artifacts["stdout"]) < 3000  # truncated for prompts


def test_inspirations_prefer_other_islands_bests_then_local_cells() -> None:
    db = ProgramDatabase(3, (6,))
    for c in range(5):
        db.add(rec(f"local{c}", island=0, cell=c, fitness=float(c), iteration=c + 1))
    db.add(rec("b1", island=1, cell=0, fitness=3.0, iteration=10))
    db.add(rec("b1-worse", island=1, cell=1, fitness=1.0, iteration=11))
    db.add(rec("b2", island=2, cell=0, fitness=7.0, iteration=12))
    parent = pid("local4")
    picked = db.inspirations(0, 4, np.random.default_rng(0), exclude=parent)
    ids = [v.program_id for v in picked]
    assert ids[:2] == [pid("b2"), pid("b1")]
    assert [v.island for v in picked[:2]] == [2, 1]
    assert len(ids) == 4 and len(set(ids)) == 4 and parent not in ids
    assert set(ids[2:]) <= {pid(f"local{c}") for c in range(4)}
    assert all(v.score is not None for v in picked)
    everything = db.inspirations(0, 10, np.random.default_rng(0), exclude=parent)
    assert len(everything) == 6  # 2 foreign bests + 4 local cells; never the parent, never twice
    assert db.inspirations(0, 4, np.random.default_rng(5), parent) == db.inspirations(
        0, 4, np.random.default_rng(5), parent)
    assert db.inspirations(0, 0, np.random.default_rng(0), parent) == ()
    # An island with no elites of its own gets the other islands' bests only.
    lonely = ProgramDatabase(2, (2,))
    lonely.add(rec("x", island=1))
    assert [v.program_id for v in lonely.inspirations(0, 3, np.random.default_rng(0))] == [pid("x")]


def test_attempts_are_bounded_and_kept_only_for_elites() -> None:
    db = ProgramDatabase(1, (4,), attempts_per_parent=3)
    db.add(rec("parent", cell=0, fitness=1.0, iteration=1))
    for i in range(5):
        db.add(rec(f"child{i}", cell=1, fitness=None, status="runtime_error", iteration=2 + i,
                   parent=pid("parent"), edit=f"edit {i}"))
    attempts = db.attempts(pid("parent"))
    assert [a.edit for a in attempts] == ["edit 2", "edit 3", "edit 4"]
    assert attempts[0].status == "runtime_error" and attempts[0].summary == "stage message child2"
    db.add(rec("better", cell=0, fitness=5.0, iteration=10))  # dethrones the parent
    assert db.attempts(pid("parent")) == ()
    db.add(rec("late-child", cell=2, fitness=0.0, iteration=11, parent=pid("parent")))
    assert db.attempts(pid("parent")) == ()  # a non-elite's children are not remembered


# -- migration and rebuild -----------------------------------------------------------------------------------------


def test_ring_migration_copies_each_best_to_the_next_island() -> None:
    db = ProgramDatabase(3, (4,))
    db.add(rec("a", island=0, cell=1, fitness=5.0, iteration=1))
    db.add(rec("b", island=1, cell=1, fitness=3.0, iteration=2, parent=None))
    db.add(rec("b-child", island=1, cell=2, fitness=None, status="timeout", iteration=3, parent=pid("b")))
    events = db.migrate(50)
    assert [(e.program_id, e.from_island, e.to_island, e.iteration, e.outcome) for e in events] == [
        (pid("a"), 0, 1, 50, AddStatus.IMPROVED),
        (pid("b"), 1, 2, 50, AddStatus.NEW_CELL),
    ]
    assert db.snapshot() == {(0, 1): pid("a"), (1, 1): pid("a"), (2, 1): pid("b")}
    # b was dethroned on island 1 in the same round it moved to island 2: it keeps its lineage's attempts.
    assert len(db.attempts(pid("b"))) == 1
    again = db.migrate(100)
    assert [e.outcome for e in again] == [AddStatus.NOT_IMPROVED, AddStatus.IMPROVED, AddStatus.NOT_IMPROVED]
    assert set(db.snapshot().values()) == {pid("a")}  # b lost its last cell: dropped with its attempts
    assert db.attempts(pid("b")) == () and db.stats().distinct_elites == 1
    assert ProgramDatabase(1, (2,)).migrate(10) == []


def _simulate(run_dir: Path, seed: int, iterations: int = 300) -> ProgramDatabase:
    """A small driver loop: sample, "evaluate" at random, add, migrate, archive everything."""
    rng = np.random.default_rng(seed)
    db = ProgramDatabase(3, (4, 5), attempts_per_parent=4)
    with ArchiveWriter(run_dir, "sim", segment_rows=64) as writer:
        seed_record = rec("seed", cell=0, fitness=0.0, iteration=0)
        db.add(seed_record)
        writer.append(seed_record)
        for it in range(1, iterations + 1):
            island = it % 3
            parent = db.sample_parent(island, rng)
            ok = rng.random() < 0.75
            fitness = round(float(rng.normal()), 1) if ok else None  # coarse: plenty of ties
            record = rec(str(it), island=island, cell=int(rng.integers(20)) if ok else None, fitness=fitness,
                         iteration=it, status="ok" if ok else "runtime_error", parent=parent.program_id,
                         edit=f"edit {it}")
            db.add(record)
            writer.append(record)
            if it % 25 == 0:
                for m in db.migrate(it):
                    writer.record_migration(m.program_id, m.from_island, m.to_island, m.iteration)
    return db


@pytest.mark.parametrize("seed", [0, 1])
def test_rebuild_from_archive_equals_live_database(tmp_path: Path, seed: int) -> None:
    run_dir = tmp_path / "run"
    live = _simulate(run_dir, seed)
    programs, migrations = read_programs(run_dir).table, read_migrations(run_dir)
    assert migrations.num_rows > 0
    rebuilt = ProgramDatabase.rebuild(programs, migrations, n_islands=3, grid_shape=(4, 5), attempts_per_parent=4)
    assert rebuilt.snapshot() == live.snapshot()
    assert rebuilt.stats() == live.stats()
    for island in range(3):
        assert rebuilt.elites(island) == live.elites(island)
        for view in live.elites(island):
            assert rebuilt.attempts(view.program_id) == live.attempts(view.program_id)
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    assert [rebuilt.sample_parent(i % 3, a) for i in range(50)] == [live.sample_parent(i % 3, b) for i in range(50)]
    # From records and Migration objects, in any row order: the same database.
    events = [Migration(m["program_id"], m["from_island"], m["to_island"], m["iteration"], AddStatus.NEW_CELL)
              for m in migrations.to_pylist()]
    records = list(iter_records(run_dir))[::-1]
    again = ProgramDatabase.rebuild(records, events, n_islands=3, grid_shape=(4, 5), attempts_per_parent=4)
    assert again.snapshot() == live.snapshot() and again.stats() == live.stats()
    assert [again.attempts(v.program_id) for v in live.elites(1)] == [live.attempts(v.program_id)
                                                                       for v in live.elites(1)]
    # Without the migration events the grids differ: they really carry information.
    assert ProgramDatabase.rebuild(programs, None, n_islands=3, grid_shape=(4, 5)).snapshot() != live.snapshot()


def test_rebuild_of_an_empty_archive_is_empty(tmp_path: Path) -> None:
    db = ProgramDatabase.rebuild(read_programs(tmp_path).table, read_migrations(tmp_path), n_islands=2,
                                 grid_shape=(3,))
    assert db.snapshot() == {} and db.stats().programs_seen == 0 and db.best() is None


def test_rebuild_rejects_migration_of_unknown_program(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with ArchiveWriter(run_dir, "r") as writer:
        writer.append(rec("a"))
        writer.record_migration("f" * 16, 0, 1, 5)
    with pytest.raises(ValueError, match="not eligible"):
        ProgramDatabase.rebuild(read_programs(run_dir).table, read_migrations(run_dir), n_islands=2,
                                grid_shape=(1,))


# -- stats, memory, cost -------------------------------------------------------------------------------------------


def test_stats() -> None:
    db = ProgramDatabase(2, (2, 5))
    db.add(rec("a", island=0, cell=0, fitness=1.0))
    db.add(rec("b", island=0, cell=3, fitness=4.0))
    db.add(rec("c", island=1, cell=3, fitness=2.0))
    db.add(rec("d", island=1, fitness=None, status="compile_error"))
    stats = db.stats()
    assert stats.programs_seen == 4
    assert stats.status_counts == {"compile_error": 1, "ok": 3}
    assert stats.elites_per_island == (2, 1)
    assert stats.coverage_per_island == (0.2, 0.1)
    assert (stats.best_program_id, stats.best_island, stats.best_fitness, stats.best_score) == (pid("b"), 0, 4.0, -4.0)
    assert stats.to_dict()["elites_per_island"] == [2, 1]
    assert db.best_record_id == pid("b") and db.best() is not None and db.best().island == 0
    assert ProgramDatabase(1, (1,)).best() is None


def test_dethroned_and_failed_programs_code_is_not_kept() -> None:
    db = ProgramDatabase(2, (2,))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            big = f"# {i}\n" + "x" * 200_000  # 60 MB in total if it were all kept
            ok = i % 2 == 0
            db.add(rec(str(i), island=i % 2, cell=0, fitness=float(i) if ok else None,
                       status="ok" if ok else "runtime_error", iteration=i, code=big))
        db.migrate(300)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert db.stats().distinct_elites == 1
    assert grown < 2_000_000  # the single elite's code plus ids and counters


def test_sample_parent_cost_does_not_grow_with_history() -> None:
    """Loose sanity bound (target < 0.1 ms with 1,000 occupied cells; the bench measures it)."""
    db = ProgramDatabase(1, (1000,))
    for i in range(5000):
        db.add(rec(str(i), cell=i % 1000, fitness=float(i % 1777), iteration=i))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(2000):
        db.sample_parent(0, rng)
    assert (time.perf_counter() - start) / 2000 < 1e-3


# -- exclusion (evolve.oversight: overfit and quarantined programs) -------------------------------------------------


def test_excluded_elites_are_never_parents_inspirations_or_migrants_and_keep_their_cells() -> None:
    db = _ranked_db(10, 0.7)  # rank r holds program str(9 - r)
    banned = {pid("9"), pid("5")}  # the best, and one in the middle
    for program_id in banned:
        db.exclude(program_id)
    rng = np.random.default_rng(4)
    drawn = {db.sample_parent(0, rng).program_id for _ in range(3000)}
    assert drawn == {pid(str(i)) for i in range(10)} - banned
    assert not banned & {v.program_id for v in db.inspirations(0, 9, rng)}
    assert set(db.snapshot().values()) == {pid(str(i)) for i in range(10)}  # the grid itself is unchanged
    assert db.best() is not None and db.best().program_id == pid("9")  # visible best: excluded or not
    assert db.best_allowed() is not None and db.best_allowed().program_id == pid("8")
    assert [v.program_id for v in db.top_elites(0, 3)] == [pid("8"), pid("7"), pid("6")]
    db.include(pid("5"))
    assert pid("5") in {db.sample_parent(0, rng).program_id for _ in range(3000)}


def test_sampling_with_exclusions_matches_rank_weights_over_the_allowed() -> None:
    n, draws = 10, 20_000
    db = _ranked_db(n, 1.0)
    db.exclude(pid("9"))  # rank 0
    db.exclude(pid("6"))  # rank 3
    allowed = [r for r in range(n) if r not in (0, 3)]
    observed = _rank_frequencies(db, n, draws, seed=5)
    weights = 1.0 / np.arange(1, len(allowed) + 1)
    expected = np.zeros(n)
    expected[allowed] = weights / weights.sum()
    assert np.max(np.abs(observed - expected)) < 0.015


def test_exclusion_follows_an_elite_across_dethroning_and_migration() -> None:
    db = ProgramDatabase(2, (4,))
    db.add(rec("seed", island=0, cell=0, fitness=0.0, iteration=0))
    db.add(rec("x", island=1, cell=1, fitness=1.0, iteration=1))
    db.add(rec("cheat", island=0, cell=2, fitness=9.0, iteration=2))
    db.exclude(pid("cheat"))
    moved = {m.program_id for m in db.migrate(3)}
    assert pid("cheat") not in moved and pid("seed") in moved  # island 0 sends its best allowed elite
    db.add(rec("better", island=0, cell=2, fitness=10.0, iteration=4))  # dethrones the excluded elite
    rng = np.random.default_rng(0)
    assert pid("better") in {db.sample_parent(0, rng).program_id for _ in range(200)}
    db.exclude(pid("seed"))
    db.exclude(pid("better"))
    db.exclude(pid("x"))
    with pytest.raises(AllExcludedError):
        db.sample_parent(0, rng)


def test_rebuild_applies_exclusions(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    live = _simulate(run_dir, 3)
    best = live.best()
    assert best is not None
    live.exclude(best.program_id)
    rebuilt = ProgramDatabase.rebuild(read_programs(run_dir).table, read_migrations(run_dir), n_islands=3,
                                      grid_shape=(4, 5), attempts_per_parent=4, excluded=[best.program_id])
    a, b = np.random.default_rng(2), np.random.default_rng(2)
    assert [rebuilt.sample_parent(i % 3, a) for i in range(60)] == [live.sample_parent(i % 3, b) for i in range(60)]
    assert best.program_id not in {v.program_id for v in rebuilt.inspirations(0, 5, a)}
