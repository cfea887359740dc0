"""RunArchive and damage: files verified before the first query, and files found only when a query fails on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.archive import ArchiveWriter
from evolve.damage import DamageKind
from evolve.query import RunArchive
from evolve.segments import verify_file
from tests.test_archive import RUN_ID, make_record

ALL = list(range(12))
KEPT = [0, 1, 2, 3, 8, 9, 10, 11]  # the middle segment (iterations 4-7) is truncated


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / RUN_ID
    with ArchiveWriter(run_dir, RUN_ID, segment_rows=4) as writer:
        for i in ALL:
            writer.append(make_record(i))
    return run_dir


def truncate_middle_segment(run_dir: Path) -> Path:
    middle = sorted((run_dir / "segments").glob("*.parquet"))[1]
    middle.write_bytes(middle.read_bytes()[: middle.stat().st_size // 2])
    return middle


def iterations(archive: RunArchive) -> list[int]:
    return [row[0] for row in archive.tuples("SELECT iteration FROM summary ORDER BY iteration")]


def test_verification_names_the_damage_and_leaves_the_file_out(run_dir: Path) -> None:
    bad = truncate_middle_segment(run_dir)
    with RunArchive(run_dir) as archive:
        assert iterations(archive) == KEPT
        assert archive.bad_files == [(bad, verify_file(bad))]
        (damage,) = archive.damage
        assert (damage.kind, damage.iterations) == (DamageKind.UNREADABLE, (4, 5, 6, 7))
        assert archive.check_files(use_cache=False) == [damage]
        assert archive.bad_files == [(bad, verify_file(bad))]  # named once


@pytest.mark.parametrize("verify", [False, True])
def test_a_file_a_query_fails_on_is_found_and_left_out_without_new_damage_lines(run_dir: Path, verify: bool) -> None:
    with RunArchive(run_dir, verify=verify) as archive:
        assert iterations(archive) == ALL
        archive.close()  # the next question opens the files again
        bad = truncate_middle_segment(run_dir)
        assert iterations(archive) == KEPT
        assert archive.bad_files == [(bad, verify_file(bad))]
        assert archive.damage == []  # only verification describes damage; this file was whole when it ran
        assert archive.count() == len(KEPT) and archive.bad_files == [(bad, verify_file(bad))]
