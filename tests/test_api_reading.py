"""The reading API a notebook uses: ``evolve.open_archive`` (no Ray needed), its SQL, its Arrow types, pandas."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pytest

import evolve

from .test_cli_archive import write_toy_run


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("reading") / "toy" / "run"
    return run_dir, write_toy_run(run_dir)


def test_the_package_lists_its_api_and_loads_it_lazily() -> None:
    names = dir(evolve)
    assert {"run", "open_archive", "RunArchive", "load_problem", "Candidate", "Status"} <= set(names)
    assert set(evolve.__all__) <= set(names)
    from evolve.api import open_archive, run
    from evolve.query import RunArchive

    assert evolve.open_archive is open_archive and evolve.run is run and evolve.RunArchive is RunArchive
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = evolve.nope  # type: ignore[attr-defined]


def test_query_over_programs_needs_no_flag(toy_run) -> None:
    run_dir, data = toy_run
    with evolve.open_archive(run_dir) as archive:
        rows = archive.query("SELECT status, count(*) AS n FROM programs GROUP BY status ORDER BY status").fetchall()
        assert dict(rows) == {"invalid_edit": 1, "ok": 6, "runtime_error": 1, "wrong_output": 1}
        loss = archive.query("SELECT metrics['loss'] FROM programs WHERE program_id = ?",
                             [data["best"].program_id]).fetchall()
        assert loss[0][0] in (0.0, [0.0])  # DuckDB versions differ: the value, or a list holding it


def test_json_columns_come_as_maps_and_structs(toy_run) -> None:
    run_dir, data = toy_run
    with evolve.open_archive(run_dir) as archive:
        table = archive.table()
        schema = table.schema
        assert pa.types.is_map(schema.field("metrics").type) and pa.types.is_map(schema.field("features").type)
        assert pa.types.is_map(schema.field("artifacts").type)
        stages = schema.field("stages").type
        assert pa.types.is_list(stages) and pa.types.is_struct(stages.value_type)
        first = table.slice(0, 1).to_pylist()[0]
        assert dict(first["metrics"]) == {"loss": 9.0}
        assert first["stages"][0]["stage"] == "main" and first["stages"][0]["status"] == "ok"
        assert dict(first["features"]) == {"a": 0.0, "code_length": float(len(data["seed"].code))}
        arrow = archive.arrow("SELECT metrics, stages FROM programs ORDER BY iteration LIMIT 1")
        assert pa.types.is_map(arrow.schema.field("metrics").type)
        raw = archive.table(columns=["metrics"], structured=False)
        assert raw.column("metrics").to_pylist()[0] == '{"loss": 9.0}'  # as stored in the Parquet files
        # the engine's own readers still get records with dicts
        assert archive.program(data["best"].program_id).metrics == {"loss": 0.0}


def test_to_pandas_says_how_to_get_pandas(toy_run, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, _ = toy_run
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with evolve.open_archive(run_dir) as archive, pytest.raises(ImportError, match=r"evolve\[pandas\]"):
        archive.to_pandas()
