"""Failed programs grouped by status and normalised message (``evolve.failures``) and ``evolve archive failures``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.archive import ArchiveWriter, write_json_atomic
from evolve.cli_failures import failures
from evolve.failures import failure_message, group_failures, normalise_message, summarise_failures
from evolve.query import RunArchive
from evolve.schema import ProgramRecord
from evolve.types import program_id_for


@pytest.mark.parametrize(("message", "normal"), [
    ("circle 3 leaves the unit square by 0.05", "circle <n> leaves the unit square by <n>"),
    ("circles 18 and 19 overlap by 1.5e-05", "circles <n> and <n> overlap by <n>"),
    ("expected centers (26, 2), got (25, 2)", "expected centers (<n>, <n>), got (<n>, <n>)"),
    ('File "/tmp/evolve-x1/program.py", line 12, in run', 'File "<path>", line <n>, in run'),
    ("see problems/demo/evaluator.py:40", "see <path>:<n>"),
    ("identical to program 0a1b2c3d4e5f6789 (already archived)", "identical to program <id> (already archived)"),
    ("<Foo object at 0x7f3a2b1c90>", "<Foo object at <id>>"),
    ("the score 'loss' is -inf", "the score 'loss' is <n>"),
    ("float64 on sm_80 with x1", "float64 on sm_80 with x1"),  # digits inside words stay
    ("\n  first   line \nsecond line 2", "first line"),
])
def test_normalise_message(message: str, normal: str) -> None:
    assert normalise_message(message) == normal


def test_a_long_message_is_cut() -> None:
    assert len(normalise_message("x" * 1000)) == 200


def test_the_message_comes_from_the_record_then_the_failed_stage_then_the_edit() -> None:
    stage = {"stage": "main", "status": "timeout", "message": "stage deadline of 2 s passed"}
    assert failure_message({"artifacts": json.dumps({"message": "recorded"}), "stages": json.dumps([stage])}) == \
        "recorded"
    assert failure_message({"artifacts": "{}", "stages": json.dumps([stage])}) == "stage deadline of 2 s passed"
    assert failure_message({"artifacts": None, "stages": None, "edit_error": "search_not_found: x"}) == \
        "search_not_found: x"
    # The same data as Arrow structs or maps (dicts, lists of pairs) reads alike.
    assert failure_message({"artifacts": [("message", "as a map")]}) == "as a map"
    assert failure_message({"artifacts": {}, "stages": [stage]}) == "stage deadline of 2 s passed"


def test_groups_count_and_keep_the_earliest_example() -> None:
    rows = [
        {"program_id": "b", "iteration": 5, "status": "wrong_output", "artifacts": '{"message": "circle 4 out by 1"}'},
        {"program_id": "a", "iteration": 2, "status": "wrong_output", "artifacts": '{"message": "circle 9 out by 3"}'},
        {"program_id": "c", "iteration": 3, "status": "runtime_error", "artifacts": '{"message": "circle 9 out"}'},
        {"program_id": "d", "iteration": 4, "status": "ok"},
        {"program_id": "e", "iteration": 6, "status": "duplicate", "edit_error": "identical to program 1234abcd99"},
    ]
    groups = group_failures(rows)
    assert [(g.status, g.reason, g.count, g.example_id) for g in groups] == [
        ("wrong_output", "circle <n> out by <n>", 2, "a"),
        ("runtime_error", "circle <n> out", 1, "c"),
    ]
    first = groups[0]
    assert (first.first_iteration, first.last_iteration, first.example_message) == (2, 5, "circle 9 out by 3")


def record(iteration: int, status: str, message: str = "", edit_error: str = "") -> ProgramRecord:
    code = f"# EVOLVE-BLOCK-START\nA = {iteration}\n# EVOLVE-BLOCK-END\n"
    return ProgramRecord(
        program_id=program_id_for(code), parent_ids=(), island=0, iteration=iteration, generation=1, code=code,
        status=status, edit_error=edit_error, score=1.0 if status == "ok" else None,
        fitness=1.0 if status == "ok" else None, artifacts={"message": message} if message else {},
        stages=[{"stage": "main", "status": status, "message": message}], created_at=1_700_000_000.0 + iteration,
        run_id="r")


@pytest.fixture
def failing_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "demo" / "r"
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "run.json", {"run_id": "r", "problem": "demo", "settings": {"islands": 1}})
    records = [record(0, "ok")]
    records += [record(i, "wrong_output", f"circle {i} leaves the unit square by 0.{i}") for i in range(1, 8)]
    records += [record(i, "runtime_error", f'Traceback: File "/tmp/s{i}/program.py", line {i}, ZeroDivisionError')
                for i in range(8, 11)]
    records += [record(11, "invalid_edit", edit_error="search_not_found: block 1 not found"),
                record(12, "ok"), record(13, "duplicate", edit_error="identical to program 0123456789abcdef")]
    with ArchiveWriter(run_dir, "r", segment_rows=5) as writer:
        for rec in records:
            writer.append(rec)
    return run_dir


def test_summary_of_a_run(failing_run: Path) -> None:
    with RunArchive(failing_run) as archive:
        summary = summarise_failures(archive)
    assert (summary.programs, summary.failed) == (14, 11)
    assert [(g.status, g.count, g.first_iteration) for g in summary.groups] == [
        ("wrong_output", 7, 1), ("runtime_error", 3, 8), ("invalid_edit", 1, 11)]
    assert summary.groups[1].reason == 'Traceback: File "<path>", line <n>, ZeroDivisionError'
    assert summary.to_dict(limit=1)["groups_total"] == 3 and len(summary.to_dict(limit=1)["groups"]) == 1


def test_the_command_prints_groups_with_an_example_id(failing_run: Path) -> None:
    result = CliRunner().invoke(failures, [str(failing_run), "--limit", "2"])
    assert result.exit_code == 0, result.output
    example = record(1, "wrong_output").program_id
    lines = result.output.splitlines()
    assert lines[0].startswith("11 of 14 programs failed (79%) in 3 group(s)")
    row = next(line for line in lines if "wrong_output" in line)
    assert row.split()[0] == "7" and "circle <n> leaves the unit square by <n>" in row and example in row
    assert "invalid_edit" not in result.output and "1 more group(s): --limit 3" in result.output
    assert f"evolve archive show {failing_run} {example}" in result.output


def test_the_command_as_json(failing_run: Path) -> None:
    result = CliRunner().invoke(failures, [str(failing_run), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["failed"] == 11 and data["programs"] == 14 and data["run_dir"] == str(failing_run)
    assert [g["count"] for g in data["groups"]] == [7, 3, 1]
    assert data["groups"][2] == {**data["groups"][2], "status": "invalid_edit",
                                 "reason": "search_not_found: block <n> not found"}


def test_the_command_on_a_run_without_failures_and_on_a_missing_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo" / "clean"
    run_dir.mkdir(parents=True)
    with ArchiveWriter(run_dir, "clean") as writer:
        writer.append(record(0, "ok"))
    result = CliRunner().invoke(failures, [str(run_dir)])
    assert result.exit_code == 0 and "no failed program among the 1 programs" in result.output
    missing = CliRunner().invoke(failures, [str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no such run folder" in missing.output
