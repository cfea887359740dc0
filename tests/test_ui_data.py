"""The UI's adapter over the archive (``evolve.ui.data``): run discovery, aggregates, the bounded genealogy, failure
grouping, pagination and live versions. Also home of ``write_packing_run``, the circle-packing run the other UI
tests browse."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from evolve.archive import ArchiveWriter, write_run_info
from evolve.problem import FeatureDim
from evolve.schema import ProgramRecord
from evolve.types import program_id_for
from evolve.ui.data import RunNotFound, failure_reason, normalise_message
from evolve.ui.store import RunStore

REPO = Path(__file__).resolve().parents[1]
FEATURES = (FeatureDim("code_length", 0, 6000, 6), FeatureDim("radius_spread", 1.0, 3.0, 6))
HOSTILE_CODE = ('# </pre><script>window.__pwned = 1</script>\n# "><img src=x onerror="window.__pwned=2">\n'
                "def run_packing():\n    return None\n")
HOSTILE_ANSWER = ('Here you go: <script>window.__pwned = 3</script> and "><img src=x onerror="window.__pwned=4">\n'
                  "<<<<<<< SEARCH\nA\n=======\nB\n>>>>>>> REPLACE")


def packing_problem(dest: Path) -> Path:
    """A copy of problems/circle_packing (whose problem.toml declares its renderer)."""
    shutil.copytree(REPO / "problems" / "circle_packing", dest)
    assert 'renderer = "render.py"' in (dest / "problem.toml").read_text()
    return dest


def _seed_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("packing_seed", REPO / "problems" / "circle_packing" /
                                                  "initial_program.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


SEED = _seed_module()


def row_packing(rows: int, shrink: float, taper: float = 0.0) -> tuple[list[list[float]], list[float]]:
    """The seed program's layout with its knobs changed: rows of circles, radii shrunk (the seed's own rule) to
    avoid overlap, and two circles in three shrunk further by ``taper`` (so the radius spread, a grid axis,
    varies)."""
    counts = [26 // rows + (1 if r < 26 % rows else 0) for r in range(rows)]
    centers = [((i + 0.5) / c, (r + 0.5) / rows) for r, c in enumerate(counts) for i in range(c)]
    radii = [r * shrink / SEED.SHRINK / (1 + taper if i % 3 else 1) for i, r in enumerate(SEED.radii_for(centers))]
    return [list(c) for c in centers], radii


def packing_record(iteration: int, parent: ProgramRecord | None, *, island: int = 0, status: str = "ok",
                   shrink: float = 0.5, rows: int = 5, **extra: object) -> ProgramRecord:
    taper = (iteration % 5) * 0.4
    padding = "#" * ((iteration * 733) % 5200)  # the code length, the other grid axis, varies too
    code = (f"# EVOLVE-BLOCK-START\nROWS = {rows}\nSHRINK = {shrink!r}\nTAPER = {taper!r}\n# EVOLVE-BLOCK-END\n"
            f"def run_packing():\n    return layout(ROWS, SHRINK, TAPER)  # iteration {iteration}\n{padding}\n")
    fields: dict[str, object] = {}
    if status == "ok":
        centers, radii = row_packing(rows, shrink, taper)
        total = sum(radii)
        spread = max(radii) / (total / len(radii))
        features = {"code_length": float(len(code)), "radius_spread": spread}
        cell = FEATURES[0].bin_of(features["code_length"]) * 6 + FEATURES[1].bin_of(spread)
        fields = {"score": total, "fitness": total, "metrics": {"sum_radii": total, "radius_spread": spread},
                  "features": features, "cell": cell,
                  "artifacts": {"packing": json.dumps({"centers": centers, "radii": radii})}}
    else:
        fields = {"artifacts": {"traceback": f"Traceback (most recent call last):\n  File \"/tmp/s{iteration}/p.py\", "
                                             f"line {iteration}\nValueError: bad radius {iteration * 0.37:.3f}"}}
    fields.update({
        "program_id": program_id_for(code), "parent_ids": (parent.program_id,) if parent else (),
        "island": island, "iteration": iteration, "generation": parent.generation + 1 if parent else 0,
        "code": code, "status": status, "mutator": "seed" if parent is None else "tune",
        "stages": [{"stage": "validate", "status": status, "metrics": fields.get("metrics", {}), "seconds": 0.02,
                    "message": "" if status == "ok" else "failed", "isolation": "session", "node": ""}],
        "isolation": "session+rlimits", "eval_seconds": 0.02, "created_at": 1_700_000_000.0 + iteration,
        "run_id": "packing",
    })
    fields.update(extra)
    return ProgramRecord(**fields)  # type: ignore[arg-type]


def write_packing_run(run_dir: Path, problem_root: Path, programs: int = 60, segment_rows: int = 8,
                      state: str = "finished") -> dict[str, object]:
    """A circle-packing run: a seed and children on two islands that slowly improve, failures with varying
    messages, an LLM child whose code and answer are hostile markup, migrations; every ok row carries the packing
    artifact the renderer draws."""
    run_dir.mkdir(parents=True)
    shutil.copy(problem_root / "problem.toml", run_dir / "problem.toml")
    write_run_info(run_dir, {"run_id": run_dir.name, "problem": "circle_packing", "problem_root": str(problem_root),
                             "state": state, "mutator": "tune", "created_at": 1_700_000_000.0,
                             "settings": {"islands": 2, "iterations": programs, "seed": 0}})
    seed = packing_record(0, None, shrink=0.5)
    records = [seed]
    best = seed
    for it in range(1, programs):
        parent = best if it % 3 else records[max(0, it - 5)]
        if parent.status != "ok":
            parent = seed
        if it % 7 == 3:
            child = packing_record(it, parent, island=it % 2, status="runtime_error")
        else:
            child = packing_record(it, parent, island=it % 2, shrink=round(0.5 + 0.45 * it / programs, 6),
                                   rows=5 + (it % 3))
        records.append(child)
        if child.status == "ok" and (child.score or 0) > (best.score or 0):
            best = child
    hostile = packing_record(programs, best, island=1, status="wrong_output", code=HOSTILE_CODE,
                             program_id=program_id_for(HOSTILE_CODE), edit=HOSTILE_ANSWER, mutator="llm:tiny",
                             prompt=json.dumps([{"role": "user", "content": "make it <b>bold</b> <script>x()</script>"}]))
    records.append(hostile)
    with ArchiveWriter(run_dir, run_dir.name, segment_rows=segment_rows) as writer:
        for record in records:
            writer.append(record)
        writer.record_migration(seed.program_id, 0, 1, 0)
    (run_dir / "stats.json").write_text(json.dumps({"best_score": best.score, "best_program": best.program_id}))
    return {"records": records, "best": best, "seed": seed, "hostile": hostile}


@pytest.fixture(scope="module")
def packing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    base = tmp_path_factory.mktemp("uidata")
    problem = packing_problem(base / "problem")
    root = base / "archive"
    data = write_packing_run(root / "circle_packing" / "run-a", problem, programs=300, segment_rows=8)
    return root, data


def test_store_finds_runs_and_keys_them_by_path(packing, tmp_path: Path) -> None:
    root, data = packing
    store = RunStore(root)
    listings = store.listings()
    assert [r["key"] for r in listings] == ["circle_packing~run-a"]
    assert listings[0]["programs"] == 301 and listings[0]["best_program"] == data["best"].program_id  # type: ignore[attr-defined]
    # A run folder itself, or a problem folder, works as the root too.
    assert [s.key for s in RunStore(root / "circle_packing" / "run-a").scan()] == ["run-a"]
    assert [s.key for s in RunStore(root / "circle_packing").scan()] == ["run-a"]
    with pytest.raises(RunNotFound):
        store.get("nope")


def test_overview_progress_outcomes_and_maps(packing) -> None:
    root, data = packing
    src = RunStore(root).get("circle_packing~run-a")
    over = src.overview()
    assert over["programs"] == 301 and over["islands"] == [0, 1]
    assert over["best"]["program_id"] == data["best"].program_id  # type: ignore[attr-defined]
    progress = src.progress()
    assert progress["stride"] == 1 and len(progress["points"]) == progress["scored"]
    scores = [b["score"] for b in progress["best"]]
    assert scores == sorted(scores) and scores[-1] == pytest.approx(data["best"].score)  # type: ignore[attr-defined]
    outcomes = src.outcomes()
    assert sum(sum(b["counts"].values()) for b in outcomes["bins"]) == 301 and len(outcomes["bins"]) <= 40
    maps = src.maps()
    assert [m["island"] for m in maps] == [0, 1] and maps[0]["width"] == 6 and maps[0]["height"] == 6
    assert any(c["program_id"] == data["best"].program_id for m in maps for c in m["cells"])  # type: ignore[attr-defined]


def test_progress_samples_large_runs_but_keeps_every_record(packing, monkeypatch: pytest.MonkeyPatch) -> None:
    import evolve.ui.data as data_module

    monkeypatch.setattr(data_module, "MAX_POINTS", 20)
    root, data = packing
    src = RunStore(root).get("circle_packing~run-a")
    progress = src.progress()
    assert progress["stride"] > 1 and len(progress["points"]) < progress["scored"]
    assert progress["best"][-1]["program_id"] == data["best"].program_id  # type: ignore[attr-defined]


def test_tree_is_bounded_marks_hidden_children_and_the_best_path(packing) -> None:
    root, data = packing
    src = RunStore(root).get("circle_packing~run-a")
    tree = src.tree(limit=25, per_node=3)
    ids = {n["program_id"] for n in tree["nodes"]}
    assert len(ids) <= 25 + len(tree["best_path"]) and tree["root"] == data["seed"].program_id  # type: ignore[attr-defined]
    assert tree["best_path"][0] == tree["root"] and tree["best_path"][-1] == data["best"].program_id  # type: ignore[attr-defined]
    assert set(tree["best_path"]) <= ids
    assert tree["truncated"] and any(n["hidden"] > 0 for n in tree["nodes"])
    for n in tree["nodes"]:
        assert n["parent_id"] is None or n["parent_id"] in ids  # connected
    # Expanding a node re-roots the tree there and lists its ancestors.
    deep = tree["best_path"][2]
    sub = src.tree(root=deep[:10], limit=25)
    assert sub["root"] == deep and sub["ancestors"] == tree["best_path"][:2]


def test_questions_survive_the_archive_reopening_its_connection(packing) -> None:
    """The archive reopens its DuckDB connection after skipping a damaged segment; the UI's in-memory table goes
    with the old one and is loaded again."""
    root, _ = packing
    src = RunStore(root).get("circle_packing~run-a")
    first = src.programs(per_page=5)
    with src.archive() as archive:
        archive.close()  # the next question opens a new connection
    assert src.programs(per_page=6)["rows"][:5] == first["rows"]
    assert src.tree(limit=20)["nodes"]


def test_failures_are_grouped_by_status_and_normalised_reason(packing) -> None:
    root, _ = packing
    src = RunStore(root).get("circle_packing~run-a")
    failures = src.failures()
    groups = {(g["status"], g["reason"]): g["count"] for g in failures["groups"]}
    runtime = failures["statuses"]["runtime_error"]
    assert groups[("runtime_error", "ValueError: bad radius N")] == runtime  # numbers differ, one group
    assert failures["total"] == runtime + 1


def test_children_rejected_before_evaluation_are_no_failure_group(tmp_path: Path) -> None:
    """``not_novel`` children (like duplicates) were never evaluated: no failure, in the groups as in the total."""
    problem = packing_problem(tmp_path / "problem")
    data = write_packing_run(tmp_path / "archive" / "circle_packing" / "run-n", problem, programs=12)
    seed = data["seed"]
    with ArchiveWriter(tmp_path / "archive" / "circle_packing" / "run-n", "run-n") as writer:
        writer.append(packing_record(12, seed, status="not_novel", edit_error="too close to its parent"))
    failures = RunStore(tmp_path / "archive").get("circle_packing~run-n").failures()
    assert "not_novel" not in {g["status"] for g in failures["groups"]}
    assert sum(g["count"] for g in failures["groups"]) == failures["total"]


def test_normalise_message_and_failure_reason() -> None:
    assert normalise_message("circle 12 leaves the square by 0.031") == "circle N leaves the square by N"
    assert normalise_message("no program 'abc' in /tmp/x/y") == "no program '…' in <path>"
    assert normalise_message("id 0123456789abcdef failed") == "id <id> failed"
    assert failure_reason("invalid_edit", "search text not found", {}, []) == "search text not found"
    assert failure_reason("runtime_error", "", {"traceback": "Traceback\n  x\nKeyError: 3\n"}, []) == "KeyError: 3"
    assert failure_reason("wrong_output", "", {"message": "score is nan\nmore"}, []) == "score is nan"
    assert failure_reason("timeout", "", {}, [{"message": "stage timed out"}]) == "stage timed out"
    assert failure_reason("memory", "", {}, []) == "memory"


def test_programs_pages_filters_and_orders(packing) -> None:
    root, data = packing
    src = RunStore(root).get("circle_packing~run-a")
    first = src.programs(page=0, per_page=50)
    assert first["total"] == 301 and len(first["rows"]) == 50 and first["rows"][0]["iteration"] == 300
    last = src.programs(page=6, per_page=50)
    assert [r["iteration"] for r in last["rows"]] == [0]
    best = src.programs(order="best", status="ok", per_page=3)
    assert best["rows"][0]["program_id"] == data["best"].program_id  # type: ignore[attr-defined]
    island = src.programs(island=1, status="runtime_error")
    assert island["total"] > 0 and all(r["island"] == 1 and r["status"] == "runtime_error" for r in island["rows"])


def test_detail_has_lineage_and_children(packing) -> None:
    root, data = packing
    src = RunStore(root).get("circle_packing~run-a")
    seed = data["seed"].program_id  # type: ignore[attr-defined]
    detail = src.detail(data["best"].program_id)  # type: ignore[attr-defined]
    assert detail.lineage[-1]["program_id"] == seed and detail.record.artifacts["packing"]
    children = src.detail(seed)
    assert children.children_total >= len(children.children) > 0


def test_version_changes_and_new_rows_appear_while_a_run_writes(tmp_path: Path) -> None:
    problem = packing_problem(tmp_path / "problem")
    run_dir = tmp_path / "archive" / "circle_packing" / "live"
    data = write_packing_run(run_dir, problem, programs=10, state="running")
    src = RunStore(tmp_path / "archive").get("circle_packing~live")
    before, count = src.version(), src.overview()["programs"]
    writer = ArchiveWriter(run_dir, "live", segment_rows=100, flush_seconds=3600)
    try:
        for i in range(3):
            writer.append(packing_record(100 + i, data["best"], shrink=0.97, rows=5 + i))  # type: ignore[arg-type]
        assert src.version() != before
        assert src.overview()["programs"] == count + 3  # journal rows, before any segment
        journaled = src.version()
        writer.flush()
        assert src.version() != journaled and src.overview()["programs"] == count + 3
    finally:
        writer.close()


def test_idle_runs_are_closed_and_listing_opens_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evolve.ui.store as store_module

    monkeypatch.setattr(store_module, "MAX_OPEN_RUNS", 1)
    problem = packing_problem(tmp_path / "problem")
    for name in ("one", "two"):
        write_packing_run(tmp_path / "archive" / "circle_packing" / name, problem, programs=5)
    store = RunStore(tmp_path / "archive")
    assert [r["programs"] for r in store.listings()] == [6, 6]
    assert not any(s.is_open for s in store.scan())
    one, two = store.get("circle_packing~one"), store.get("circle_packing~two")
    one.overview()
    assert one.is_open
    store.get("circle_packing~two").overview()
    assert two.is_open and not one.is_open
    assert one.overview()["programs"] == 6  # reopened on demand
