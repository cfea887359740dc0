"""The journal as every reader sees it: a line that parses and passes its checksum but does not fit the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.archive import ArchiveWriter, read_events, read_programs
from evolve.damage import DamageKind, inspect_run
from evolve.journal import encode_line, read_journal
from evolve.query import RunArchive
from evolve.segments import EVENT_TABLE, PROGRAM_TABLE
from tests.test_archive import RUN_ID, make_record


@pytest.fixture
def misfit_journal(tmp_path: Path) -> tuple[Path, Path]:
    """A dead writer's journal: programs 0-4, an event, a program row whose iteration is text, then program 5."""
    run_dir = tmp_path / RUN_ID
    writer = ArchiveWriter(run_dir, RUN_ID, segment_rows=1000, flush_seconds=1e9)
    for i in range(5):
        writer.append(make_record(i))
    writer.record_event("note", {"text": "hello"}, iteration=4)
    journal = writer.journal_path
    writer.close(flush=False)  # the journal stays, as a killed writer leaves it
    misfit = {**make_record(9).to_row(), "iteration": "nine"}
    with open(journal, "ab") as f:
        f.write(encode_line(PROGRAM_TABLE.tag, misfit) + encode_line(PROGRAM_TABLE.tag, make_record(5).to_row()))
    return run_dir, journal


def test_a_row_that_does_not_fit_the_schema_is_a_bad_line_and_its_neighbours_are_kept(
        misfit_journal: tuple[Path, Path]) -> None:
    _, journal = misfit_journal
    content = read_journal(journal)
    (bad,) = content.bad
    assert (bad.number, bad.iteration, bad.program_id) == (7, None, make_record(9).program_id)
    assert "does not fit the archive schema" in bad.reason and not content.torn_tail
    programs = content.arrow(PROGRAM_TABLE)
    assert programs.column("iteration").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert programs.equals(PROGRAM_TABLE.table(content.of(PROGRAM_TABLE)))
    assert content.arrow(EVENT_TABLE).column("kind").to_pylist() == ["note"]


def test_every_reader_sees_the_good_rows_once_and_names_the_bad_line(misfit_journal: tuple[Path, Path]) -> None:
    run_dir, journal = misfit_journal
    with pytest.warns(UserWarning, match=r"line\(s\) 7 do not read back"):
        read = read_programs(run_dir)
    assert read.table.column("iteration").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert [path for path, _ in read.bad_files] == [journal]
    with pytest.warns(UserWarning, match=journal.name):
        assert read_events(run_dir).column("kind").to_pylist() == ["note"]

    inspection = inspect_run(run_dir)
    assert inspection.programs.column("iteration").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert inspection.events.num_rows == 1
    assert [(d.kind, d.lines) for d in inspection.damage] == [(DamageKind.JOURNAL, (7,))]

    with RunArchive(run_dir) as archive:
        assert archive.count() == 6
        assert [r["iteration"] for r in archive.table(columns=["iteration"]).to_pylist()] == [0, 1, 2, 3, 4, 5]
        assert [e["kind"] for e in archive.events()] == ["note"]
        assert [(d.kind, d.lines) for d in archive.damage] == [(DamageKind.JOURNAL, (7,))]
        assert archive.bad_files == []  # a journal is never left out of a query: only its bad lines are
