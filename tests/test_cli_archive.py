"""``evolve archive``: every subcommand on a run written in the test, with ``--json`` parsed back, the errors a user
meets (missing run, missing program, a corrupt segment), and one real run of the Ray loop cross-checked against the
engine's own readers."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from evolve.archive import ArchiveWriter, read_migrations, read_programs, write_run_info
from evolve.cli_archive import archive
from evolve.database import ProgramDatabase
from evolve.problem import FeatureDim
from evolve.query import INDEX_MIN_FILES, INDEX_STALE_FILES, RunArchive
from evolve.schema import ProgramRecord
from evolve.types import program_id_for

PROBLEM_TOML = """\
name = "toy"
seed = "seed.py"
[score]
metric = "loss"
direction = "minimize"
[[features]]
name = "a"
min = -5
max = 5
bins = 5
[[features]]
name = "code_length"
min = 0
max = 400
bins = 4
[[stages]]
name = "main"
"""
FEATURES = (FeatureDim("a", -5, 5, 5), FeatureDim("code_length", 0, 400, 4))


def program(a: float, note: str = "") -> str:
    return f"# EVOLVE-BLOCK-START\nA = {a}\n# EVOLVE-BLOCK-END\n{note}\ndef solve():\n    return A\n"


def make_record(code: str, iteration: int, parent: ProgramRecord | None, *, island: int = 0, status: str = "ok",
                loss: float | None = None, **extra: object) -> ProgramRecord:
    features: dict[str, float] = {}
    cell = None
    if status == "ok":
        a = float(code.split("A = ")[1].split("\n")[0])
        features = {"a": a, "code_length": float(len(code))}
        cell = 0
        for dim in FEATURES:
            cell = cell * dim.bins + dim.bin_of(features[dim.name])
    fields: dict[str, object] = {
        "program_id": program_id_for(code),
        "parent_ids": (parent.program_id,) if parent else (),
        "island": island,
        "iteration": iteration,
        "generation": parent.generation + 1 if parent else 0,
        "code": code,
        "status": status,
        "mutator": "seed" if parent is None else "scripted",
        "score": loss,
        "fitness": -loss if status == "ok" and loss is not None else None,
        "metrics": {"loss": loss} if loss is not None else {},
        "features": features,
        "cell": cell,
        "stages": [{"stage": "main", "status": status, "metrics": {"loss": loss} if loss is not None else {},
                    "artifacts": {}, "seconds": 0.01, "message": "" if status == "ok" else "failed",
                    "isolation": "session", "in_process": False, "node": ""}],
        "isolation": "session+rlimits",
        "eval_seconds": 0.01 * (iteration + 1),
        "mutate_seconds": 0.001,
        "created_at": 1_700_000_000.0 + iteration,
        "run_id": "toy-run",
    }
    fields.update(extra)
    return ProgramRecord(**fields)  # type: ignore[arg-type]


def write_toy_run(run_dir: Path, segment_rows: int = 4) -> dict[str, object]:
    """A small run: a seed, a chain of improvements on island 0, failures, an LLM child, a migration to island 1."""
    run_dir.mkdir(parents=True)
    (run_dir / "problem.toml").write_text(PROBLEM_TOML)
    write_run_info(run_dir, {"run_id": "toy-run", "problem": "toy", "state": "finished", "mutator": "scripted",
                             "created_at": 1_700_000_000.0, "settings": {"islands": 2, "iterations": 9, "seed": 3}})
    seed = make_record(program(0.0), 0, None, loss=9.0)
    c1 = make_record(program(1.0), 1, seed, loss=4.0)
    c2 = make_record(program(1.5, "# wider"), 2, c1, island=1, loss=2.25)
    bad = make_record(program(9.0, "raise"), 3, c1, status="runtime_error",
                      artifacts={"traceback": "Traceback (most recent call last):\nZeroDivisionError"})
    c3 = make_record(program(2.5), 4, c2, loss=0.25)
    invalid = make_record("no edit", 5, c3, status="invalid_edit", edit="<<<<<<< SEARCH\nB\n=======\nC\n>>>>>>> REPLACE",
                          edit_error="search text not found")
    llm_child = make_record(program(3.0, "# the model's idea"), 6, c3, loss=0.0,
                            mutator="llm:tiny", prompt=json.dumps([{"role": "system", "content": "be brief"},
                                                                    {"role": "user", "content": "improve A"}]),
                            llm={"model": "tiny", "tokens": 120, "cost": 0.0015}, edit="A = 3.0")
    wrong = make_record(program(-4.0), 7, seed, island=1, status="wrong_output")
    side = make_record(program(-2.0), 8, seed, island=1, loss=16.0)
    records = [seed, c1, c2, bad, c3, invalid, llm_child, wrong, side]
    with ArchiveWriter(run_dir, "toy-run", segment_rows=segment_rows) as writer:
        for record in records:
            writer.append(record)
        writer.record_migration(seed.program_id, 0, 1, 0)
        writer.record_migration(c3.program_id, 0, 1, 4)
    (run_dir / "stats.json").write_text(json.dumps({"best_score": 0.0, "best_program": llm_child.program_id,
                                                    "stop_reason": "budget", "elapsed_seconds_this_session": 1.5}))
    return {"records": records, "best": llm_child, "seed": seed, "c1": c1, "c2": c2, "c3": c3, "invalid": invalid,
            "bad": bad, "side": side}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("archive") / "toy" / "toy-run"
    return run_dir, write_toy_run(run_dir)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(archive, list(args), catch_exceptions=False)


def ok_json(*args: str) -> object:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ls_lists_runs_with_problem_size_best_and_date(toy) -> None:
    run_dir, data = toy
    root = run_dir.parents[1]
    listed = ok_json("ls", str(root))
    assert len(listed) == 1
    entry = listed[0]
    assert entry["problem"] == "toy" and entry["run_id"] == "toy-run"
    assert entry["programs"] == len(data["records"])
    assert entry["best_score"] == 0.0 and entry["created_at"] == 1_700_000_000.0
    text = invoke("ls", str(root)).stdout
    assert "toy-run" in text and "2023-11-14" in text


def test_top_ranks_by_fitness_and_keeps_its_columns(toy) -> None:
    run_dir, data = toy
    rows = ok_json("top", str(run_dir), "-n", "3")
    assert [r["program_id"] for r in rows] == [data["best"].program_id, data["c3"].program_id, data["c2"].program_id]
    assert [r["score"] for r in rows] == [0.0, 0.25, 2.25]
    assert set(rows[0]) >= {"program_id", "score", "status", "island", "iteration", "mutator"}
    only_island_1 = ok_json("top", str(run_dir), "--island", "1")
    assert {r["island"] for r in only_island_1} == {1}
    text = invoke("top", str(run_dir)).stdout.splitlines()
    assert text[0].split() == ["rank", "program", "score", "standing", "status", "island", "iter", "mutator"]
    assert text[1].split()[:2] == ["1", data["best"].program_id]
    assert len(text) == 1 + 6  # the ok programs only


def test_top_of_a_problem_folder_uses_its_newest_run(toy) -> None:
    run_dir, data = toy
    rows = ok_json("top", str(run_dir.parent), "-n", "1")
    assert rows[0]["program_id"] == data["best"].program_id


def test_show_prints_metrics_stages_code_prompt_and_artifacts(toy) -> None:
    run_dir, data = toy
    best = data["best"]
    text = invoke("show", str(run_dir), best.program_id[:7]).stdout
    assert text.startswith(f"program {best.program_id}  status ok  score 0.0")
    assert f"parent: {data['c3'].program_id}" in text
    assert "the model's idea" in text  # code
    assert "--- prompt: user ---" in text and "improve A" in text
    assert "tokens=120" in text and "cost=0.0015" in text
    assert "[main] ok" in text
    bad = invoke("show", str(run_dir), data["bad"].program_id).stdout
    assert "runtime_error" in bad and "ZeroDivisionError" in bad
    record = ok_json("show", str(run_dir), best.program_id)
    assert record["program_id"] == best.program_id and record["metrics"] == {"loss": 0.0}
    assert record["llm"]["tokens"] == 120 and record["prompt"][1]["content"] == "improve A"
    assert record["parent_ids"] == [data["c3"].program_id]


def test_show_rejected_edit(toy) -> None:
    run_dir, data = toy
    text = invoke("show", str(run_dir), data["invalid"].program_id).stdout
    assert "edit rejected: search text not found" in text and ">>>>>>> REPLACE" in text


def test_lineage_walks_back_to_the_seed(toy) -> None:
    run_dir, data = toy
    steps = ok_json("lineage", str(run_dir))  # default: the best program
    ids = [s["program_id"] for s in steps]
    assert ids == [data[k].program_id for k in ("seed", "c1", "c2", "c3", "best")]
    assert [s["score"] for s in steps] == [9.0, 4.0, 2.25, 0.25, 0.0]
    text = invoke("lineage", str(run_dir), data["c2"].program_id).stdout
    assert text.index(data["seed"].program_id) < text.index(data["c2"].program_id)
    assert "better" in text and data["best"].program_id not in text


def test_diff_against_parent_and_between_two_programs(toy) -> None:
    run_dir, data = toy
    result = ok_json("diff", str(run_dir), data["c2"].program_id)
    assert result["from"] == data["c1"].program_id and result["to"] == data["c2"].program_id
    assert "-A = 1.0" in result["diff"] and "+A = 1.5" in result["diff"] and "+# wider" in result["diff"]
    two = invoke("diff", str(run_dir), data["seed"].program_id, data["side"].program_id).stdout
    assert "-A = 0.0" in two and "+A = -2.0" in two
    seed = invoke("diff", str(run_dir), data["seed"].program_id)
    assert seed.exit_code == 1 and "no parent" in seed.output


def test_map_shows_each_island_grid_with_migrated_elites(toy) -> None:
    run_dir, data = toy
    grids = ok_json("map", str(run_dir))
    assert [g["island"] for g in grids] == [0, 1]
    by_island = {g["island"]: {c["cell"]: c["program_id"] for c in g["cells"]} for g in grids}
    # c1 and c3 share a cell (a in [1, 3), short code): the better one, c3, holds it.
    assert set(by_island[0].values()) == {data[k].program_id for k in ("seed", "c3", "best")}
    # Island 1: its own programs plus what migrated there (the seed, and c3, which takes c2's cell).
    assert set(by_island[1].values()) == {data[k].program_id for k in ("seed", "side", "c3")}
    assert grids[0]["shape"] == [5, 4] and grids[0]["coverage"] == 3 / 20
    text = invoke("map", str(run_dir), "--island", "0").stdout
    assert "island 0: 3/20 cells" in text and "a \\ code_length" in text and "0.25" in text
    assert "island 1" not in text
    wrong = invoke("map", str(run_dir), "--x", "nope")
    assert wrong.exit_code == 1 and "unknown feature 'nope'" in wrong.output


def test_stats_counts_outcomes_costs_and_improvement(toy) -> None:
    run_dir, data = toy
    stats = ok_json("stats", str(run_dir))
    assert stats["programs"] == 9 and stats["evaluated"] == 8
    assert stats["statuses"] == {"ok": 6, "invalid_edit": 1, "runtime_error": 1, "wrong_output": 1}
    # A minimized loss going from 9 (seed) to 0 (best) improved by +9, not -9.
    assert stats["best"]["program_id"] == data["best"].program_id and stats["improvement"] == 9.0
    assert stats["llm"] == {"answers": 1, "tokens": 120, "cost": 0.0015}
    assert {m["mutator"] for m in stats["mutators"]} == {"scripted", "llm:tiny"}
    text = invoke("stats", str(run_dir)).stdout
    assert "failure rate 33.3%" in text and "runtime_error" in text and "llm: 1 calls, 120 tokens" in text
    assert "improvement: +9 (the best scores 9 lower than the seed; minimize)" in text


def test_export_program_and_filtered_archive(toy, tmp_path: Path) -> None:
    run_dir, data = toy
    out = tmp_path / "best.py"
    assert invoke("export", str(run_dir), data["best"].program_id, "-o", str(out)).exit_code == 0
    assert out.read_text() == data["best"].code
    assert invoke("export", str(run_dir), data["best"].program_id).stdout == data["best"].code
    report = ok_json("export", str(run_dir), "-o", str(tmp_path / "ok.csv"), "--status", "ok", "--max-score", "3")
    assert report["rows"] == 3
    rows = list(csv.DictReader((tmp_path / "ok.csv").open()))
    assert sorted(float(r["score"]) for r in rows) == [0.0, 0.25, 2.25]
    assert {r["status"] for r in rows} == {"ok"}
    assert json.loads(rows[0]["parent_ids"]) in ([data["c1"].program_id], [data["c2"].program_id],
                                                 [data["c3"].program_id])
    json_out = tmp_path / "all.json"
    ok_json("export", str(run_dir), "-o", str(json_out), "--columns", "program_id,status,metrics,parent_ids")
    items = json.loads(json_out.read_text())
    assert len(items) == 9 and items[0]["metrics"] == {"loss": 9.0} and items[1]["parent_ids"] == [
        data["seed"].program_id]
    pq_out = tmp_path / "failed.parquet"
    ok_json("export", str(run_dir), "-o", str(pq_out), "--where", "status <> 'ok'")
    assert pq.read_table(pq_out).num_rows == 3
    assert invoke("export", str(run_dir), "-o", str(tmp_path / "x.txt")).exit_code == 1


def test_plot_and_report_commands_write_files(toy, tmp_path: Path) -> None:
    run_dir, _ = toy
    plots = ok_json("plot", str(run_dir), "-o", str(tmp_path / "plots"))
    assert set(plots) == {"progress", "failures", "map_island_0", "map_island_1"}
    assert all(Path(p).stat().st_size > 1000 for p in plots.values())
    report = ok_json("report", str(run_dir), "-o", str(tmp_path / "r.html"))
    assert Path(report["path"]).read_text().startswith("<!DOCTYPE html>")


def test_missing_run_and_missing_program_are_clear_errors(toy, tmp_path: Path) -> None:
    run_dir, _ = toy
    for command in ("top", "map", "stats", "lineage", "plot"):
        result = invoke(command, str(tmp_path / "nope"))
        assert result.exit_code == 1 and "no such run folder" in result.output, command
    not_run = invoke("top", str(tmp_path))
    assert not_run.exit_code == 1 and "is not a run folder" in not_run.output
    for args in (("show", "deadbeef"), ("lineage", "deadbeef"), ("diff", "deadbeef"), ("export", "deadbeef")):
        result = invoke(args[0], str(run_dir), *args[1:])
        assert result.exit_code == 1 and "no program 'deadbeef'" in result.output, args
    assert "Traceback" not in invoke("show", str(run_dir), "deadbeef").output


def test_corrupt_segment_is_named_and_the_rest_is_shown(toy, tmp_path: Path) -> None:
    run_dir, data = toy
    copy = tmp_path / "toy" / "copy"
    shutil.copytree(run_dir, copy)
    segments = sorted((copy / "segments").glob("*.parquet"))
    assert len(segments) == 3  # 9 rows, 4 per segment
    bad = segments[1]  # rows 4..7: c3, invalid, llm_child, wrong
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    result = invoke("top", str(copy), "--json")
    assert result.exit_code == 0
    assert str(bad) in result.stderr and "skipped unreadable segment" in result.stderr
    ids = [r["program_id"] for r in json.loads(result.stdout)]
    assert ids == [data[k].program_id for k in ("c2", "c1", "seed", "side")]
    for args in (("stats",), ("map",), ("show", data["c2"].program_id), ("lineage", data["c2"].program_id),
                 ("ls",)):
        target = str(copy.parent) if args[0] == "ls" else str(copy)
        result = invoke(args[0], target, *args[1:])
        assert result.exit_code == 0, (args, result.output)
        assert str(bad) in result.stderr, args
    gone = invoke("show", str(copy), data["best"].program_id)
    assert gone.exit_code == 1 and "no program" in gone.output and str(bad) in gone.stderr


def test_index_answers_like_the_segments_and_follows_new_segments(tmp_path: Path) -> None:
    run_dir = tmp_path / "toy" / "many"
    data = write_toy_run(run_dir, segment_rows=1)
    # Pad the run with many small segments so that it gets an index.
    seed = data["seed"]
    with ArchiveWriter(run_dir, "toy-run", segment_rows=1) as writer:
        for i in range(INDEX_MIN_FILES):
            writer.append(make_record(program(-3.0 + i * 0.01), 100 + i, seed, island=i % 2, loss=5.0 + i))
    with RunArchive(run_dir) as indexed, RunArchive(run_dir, use_index=False) as direct:
        assert indexed.top(50) == direct.top(50)
        assert indexed.grid(1) == direct.grid(1)
        assert indexed.lineage(data["best"].program_id) == direct.lineage(data["best"].program_id)
        assert indexed.program(data["c2"].program_id) == direct.program(data["c2"].program_id)
        assert indexed.summary()["statuses"] == direct.summary()["statuses"]
        assert indexed.index_files and not direct.index_files
    index = run_dir / ".index" / "programs.parquet"
    before = index.stat().st_mtime_ns
    # A newer segment is read next to the index (no rebuild for a few files)...
    better = make_record(program(4.0), 200, data["best"], loss=-1.0)
    with ArchiveWriter(run_dir, "toy-run", segment_rows=1) as writer:
        writer.append(better)
    with RunArchive(run_dir) as archive_:
        assert archive_.best()["program_id"] == better.program_id
    assert index.stat().st_mtime_ns == before
    # Many newer segments: the index is extended with them.
    with ArchiveWriter(run_dir, "toy-run", segment_rows=1) as writer:
        for i in range(INDEX_STALE_FILES):
            writer.append(make_record(program(-1.0 + i * 0.001), 250 + i, better, loss=1.0 + i))
    with RunArchive(run_dir) as archive_, RunArchive(run_dir, use_index=False) as direct:
        assert archive_.top(100) == direct.top(100) and archive_.count() == 9 + INDEX_MIN_FILES + 1 + INDEX_STALE_FILES
    assert index.stat().st_mtime_ns != before
    before = index.stat().st_mtime_ns
    # ...while a compaction (covered files gone) makes it stale: it is rebuilt when next needed.
    from evolve.archive import compact

    compact(run_dir, small_rows=10)
    with RunArchive(run_dir) as archive_:
        assert archive_.best()["program_id"] == better.program_id
        assert archive_.count() == 9 + INDEX_MIN_FILES + 1 + INDEX_STALE_FILES
        assert not archive_.index_files  # one merged segment: read directly
    with ArchiveWriter(run_dir, "toy-run", segment_rows=1) as writer:
        for i in range(INDEX_MIN_FILES):
            writer.append(make_record(program(-4.5 + i * 0.01), 300 + i, seed, loss=50.0 + i))
    with RunArchive(run_dir) as archive_, RunArchive(run_dir, use_index=False) as direct:
        assert archive_.count() == direct.count() == 9 + 2 * INDEX_MIN_FILES + 1 + INDEX_STALE_FILES
        assert archive_.top(100) == direct.top(100)
    assert index.stat().st_mtime_ns != before


def test_journal_rows_of_a_live_run_are_visible(tmp_path: Path) -> None:
    run_dir = tmp_path / "toy" / "live"
    data = write_toy_run(run_dir)
    writer = ArchiveWriter(run_dir, "toy-run", segment_rows=1000, flush_seconds=3600)
    try:
        newest = make_record(program(3.5), 50, data["best"], loss=-0.5)
        writer.append(newest)  # journaled, not yet in a segment
        rows = ok_json("top", str(run_dir), "-n", "1")
        assert rows[0]["program_id"] == newest.program_id
        assert ok_json("show", str(run_dir), newest.program_id)["score"] == -0.5
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------------------------
# A real run of the loop, cross-checked against the engine's readers


@pytest.fixture(scope="module")
def real_run(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evolve.loop import Evolution
    from evolve.mutators.scripted import ScriptedMutator
    from evolve.problem import load_problem
    from evolve.settings import RunSettings

    from .test_loop import EVALUATOR, PROBLEM_TOML, SEED

    folder = tmp_path_factory.mktemp("tinyproblem") / "tiny"
    folder.mkdir()
    (folder / "seed.py").write_text(SEED)
    (folder / "evaluator.py").write_text(EVALUATOR)
    (folder / "problem.toml").write_text(PROBLEM_TOML)
    run_dir = tmp_path_factory.mktemp("runs") / "tiny" / "run"
    settings = RunSettings(iterations=30, concurrency=4, islands=2, migration_interval=5, seed=11)
    Evolution(load_problem(folder), settings, ScriptedMutator(), run_dir, "run").run()
    return run_dir


@pytest.mark.ray
def test_real_run_top_and_map_agree_with_the_engine(real_run: Path) -> None:
    table = read_programs(real_run).table
    rows = [r for r in table.to_pylist() if r["fitness"] is not None]
    rows.sort(key=lambda r: (-r["fitness"], r["iteration"], r["program_id"]))
    top = ok_json("top", str(real_run), "-n", "5", "--standing", "all")  # by default: promoted programs only
    assert [r["program_id"] for r in top] == [r["program_id"] for r in rows[:5]]
    assert ok_json("top", str(real_run), "-n", "1")[0]["program_id"] == rows[0]["program_id"]  # the best, promoted
    db = ProgramDatabase.rebuild(table, read_migrations(real_run), n_islands=2, grid_shape=(5,))
    for grid in ok_json("map", str(real_run)):
        assert {c["cell"]: c["program_id"] for c in grid["cells"]} == db.grid(grid["island"])
    best = top[0]["program_id"]
    steps = ok_json("lineage", str(real_run), best)
    assert steps[0]["iteration"] == 0 and steps[-1]["program_id"] == best
    assert all(s["parent_id"] == p["program_id"] for p, s in zip(steps, steps[1:], strict=False))
    stats = ok_json("stats", str(real_run))
    assert stats["programs"] == table.num_rows and stats["state"] == "finished"
    shown = ok_json("show", str(real_run), best)
    assert shown["code"] and shown["stages"][0]["stage"] == "main"


# ---------------------------------------------------------------------------------------------------------------
# What the first hour of use found misleading (issue 13): each through the command line


def test_wrong_island_is_an_error_naming_the_runs_islands(toy) -> None:
    run_dir, _ = toy
    for args in (("top", "--island", "9"), ("map", "--island", "7")):
        result = invoke(args[0], str(run_dir), *args[1:])
        assert result.exit_code == 1, args
        assert f"island {args[2]} does not exist" in result.output and "islands are 0–1" in result.output


def test_unknown_status_is_a_usage_error(toy, tmp_path: Path) -> None:
    run_dir, _ = toy
    result = invoke("export", str(run_dir), "-o", str(tmp_path / "x.csv"), "--status", "okk")
    assert result.exit_code == 2 and "okk" in result.output and "wrong_output" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_top_says_why_it_is_empty(toy) -> None:
    run_dir, _ = toy
    unscored = invoke("top", str(run_dir), "--where", "status = 'wrong_output'")
    assert unscored.exit_code == 0 and unscored.stdout == ""
    assert "1 program(s) match --where" in unscored.stderr and "none of them scored" in unscored.stderr
    nothing = invoke("top", str(run_dir), "--where", "mutator = 'nobody'", "--json")
    assert nothing.exit_code == 0 and json.loads(nothing.stdout) == []
    assert "no program matches --where" in nothing.stderr


def test_invalid_where_is_an_error_listing_the_columns(toy, tmp_path: Path) -> None:
    run_dir, _ = toy
    result = invoke("top", str(run_dir), "--where", "scor > 1")
    assert result.exit_code == 1 and "invalid --where condition 'scor > 1'" in result.output
    assert "its columns:" in result.output and "score" in result.output and "mutator" in result.output
    exported = invoke("export", str(run_dir), "-o", str(tmp_path / "x.jsonl"), "--where", "nonsense(")
    assert exported.exit_code == 1 and "invalid export --where condition" in exported.output
    assert "edit_error" in exported.output  # export filters on every stored column
    help_text = invoke("top", "--help").output
    assert all(column in help_text for column in ("program_id", "parent_id", "generation", "fitness", "cell"))


def test_export_jsonl_from_the_suffix(toy, tmp_path: Path) -> None:
    run_dir, data = toy
    for name in ("all.jsonl", "all.ndjson"):
        report = ok_json("export", str(run_dir), "-o", str(tmp_path / name))
        assert report["format"] == "jsonl" and report["rows"] == 9
        lines = (tmp_path / name).read_text().splitlines()
        items = [json.loads(line) for line in lines]
        assert len(items) == 9 and items[0]["metrics"] == {"loss": 9.0} and items[0]["stages"][0]["stage"] == "main"
    empty = invoke("export", str(run_dir), "-o", str(tmp_path / "none.jsonl"), "--status", "timeout")
    assert empty.exit_code == 0 and (tmp_path / "none.jsonl").read_text() == ""
    assert "no program matches --status timeout" in empty.stderr


def test_show_says_a_failure_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "toy" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "problem.toml").write_text(PROBLEM_TOML)
    write_run_info(run_dir, {"run_id": "r", "problem": "toy", "state": "finished", "settings": {"islands": 1}})
    seed = make_record(program(0.0), 0, None, loss=9.0)
    message = "circle 3 leaves the unit square by 0.05"
    # As the loop records a failed stage: its message in the stage, in the artifacts, and nowhere else.
    failed = make_record(program(2.0), 1, seed, status="wrong_output", artifacts={"message": message})
    stages = [dict(failed.stages[0], message=message)]
    failed = dataclasses.replace(failed, stages=stages)
    edit = "identical to program abc (already archived or being evaluated)"
    twin = make_record("", 2, seed, status="duplicate", edit_error=edit, artifacts={"message": edit},
                       stages=[{"stage": "edit", "status": "duplicate", "message": edit, "metrics": {},
                                "artifacts": {}, "seconds": 0.0}])
    with ArchiveWriter(run_dir, "r") as writer:
        for record in (seed, failed, twin):
            writer.append(record)
    for record, text in ((failed, message), (twin, edit)):
        shown = invoke("show", str(run_dir), record.program_id).stdout
        assert shown.count(text) == 1, shown


def test_lineage_and_stats_ignore_float_noise(tmp_path: Path) -> None:
    run_dir = tmp_path / "toy" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "problem.toml").write_text(PROBLEM_TOML)
    write_run_info(run_dir, {"run_id": "r", "problem": "toy", "state": "finished", "settings": {"islands": 1}})
    seed = make_record(program(1.0), 0, None, loss=0.3)
    noise = make_record(program(1.0, "# same sum, other order"), 1, seed, loss=0.1 + 0.2)  # 0.30000000000000004
    better = make_record(program(1.25), 2, noise, loss=0.25)
    with ArchiveWriter(run_dir, "r") as writer:
        for record in (seed, noise, better):
            writer.append(record)
    assert noise.score != seed.score  # the archive keeps the noise; the tools must not call it a change
    text = invoke("lineage", str(run_dir), noise.program_id).stdout
    assert "better" not in text and "worse" not in text and "=" in text.splitlines()[-1]
    assert "better" in invoke("lineage", str(run_dir), better.program_id).stdout
    (scripted,) = ok_json("stats", str(run_dir))["mutators"]
    assert scripted["children"] == 2 and scripted["improved"] == 1


def test_ls_never_cuts_the_run_folder(tmp_path: Path) -> None:
    root = tmp_path / "a-long-archive-root-folder-name-that-users-copy" / "archive"
    run_dir = root / "toy" / "20261207-000000-abcd"
    write_toy_run(run_dir)
    result = CliRunner(env={"COLUMNS": "60"}).invoke(archive, ["ls", str(root)], catch_exceptions=False)
    header, row = result.stdout.splitlines()
    assert str(run_dir) in row  # whole, even though the line is wider than 60 columns
    assert header.split()[0] == "folder" and "mutator" not in header  # other columns dropped first
    wide = CliRunner(env={"COLUMNS": "400"}).invoke(archive, ["ls", str(root)], catch_exceptions=False).stdout
    assert wide.splitlines()[0].split() == ["problem", "run", "programs", "best", "score", "created", "state",
                                            "mutator", "folder"]
    assert str(run_dir) in wide
