"""People's side of oversight: ``evolve archive approve | reject | release | audit``, ``evolve eval``'s verdict, the
report's Oversight section, ``archive top`` and ``show``, and the reading functions the archive commands use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.cli_oversight import approve, audit_command, reject
from evolve.evaluation import evaluate_locally
from evolve.oversight.html import oversight_html
from evolve.oversight.read import best_promoted, best_row, decision_lines, top_rows
from evolve.oversight.standing import Standing
from evolve.oversight.verdict import eval_verdict
from evolve.problem import load_problem
from evolve.query import RunArchive
from evolve.types import program_id_for
from tests.oversight_problem.programs import MEMORISER, honest

from .test_oversight_runs import PROBLEM, code_of, in_order, local_run, pid_of


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("oversight_cli") / "run"
    local_run(PROBLEM, run, in_order(honest(2), MEMORISER, honest(3)), 3)
    return run


def test_eval_verdict_puts_visible_and_heldout_side_by_side() -> None:
    problem = load_problem(PROBLEM)
    for answer, standing in ((honest(3), Standing.PROMOTED), (MEMORISER, Standing.OVERFIT)):
        code = code_of(answer)
        pid = program_id_for(code)
        verdict = eval_verdict(problem, code, pid, evaluate_locally(problem, code, pid, 0), 0)
        assert verdict.standing is standing, verdict.lines()
        first, figures = verdict.lines()[:2]
        assert first == f"standing: {standing.value}"
        assert "visible score = " in figures and "held-out heldout_score = " in figures
        assert json.loads(json.dumps(verdict.to_dict()))["standing"] == standing.value


def test_decisions_are_signed_and_shown(run_dir: Path) -> None:
    runner = CliRunner()
    best = pid_of(honest(3))
    result = runner.invoke(approve, [str(run_dir), best[:6], "--by", "ana", "--note", "<b>fine</b>"])
    assert result.exit_code == 0, result.output
    assert f"{best}: approved by ana" in result.output
    unsigned = runner.invoke(reject, [str(run_dir), best, "--by", " "])
    assert unsigned.exit_code != 0 and "signed" in unsigned.output
    forced = runner.invoke(approve, [str(run_dir), pid_of(MEMORISER), "--by", "bo", "--force", "--json"])
    assert forced.exit_code == 0 and json.loads(forced.output)["forced"] is True
    assert json.loads(forced.output)["standing"] == "overfit"
    with RunArchive(run_dir) as archive:
        lines = decision_lines(archive, pid_of(MEMORISER))
        assert lines[0].startswith("standing: overfit") and "forced" in lines[1]
        assert best_promoted(archive)["program_id"] == best == best_row(archive)["program_id"]
        html = oversight_html(archive)
    assert f'id="best-promoted">{best}<' in html and "&lt;b&gt;fine&lt;/b&gt;" in html and "<b>fine" not in html
    assert "heldout_disagreement" in html and "Audit trail" in html


def test_audit_text_and_json(run_dir: Path) -> None:
    text = CliRunner().invoke(audit_command, [str(run_dir)])
    assert text.exit_code == 0 and "overfit" in text.output and pid_of(MEMORISER) in text.output
    entries = json.loads(CliRunner().invoke(audit_command, [str(run_dir), "--json"]).output)
    assert {"at", "kind", "program_id", "summary", "numbers"} <= set(entries[0])


def test_audit_of_a_run_recorded_before_oversight(tmp_path: Path) -> None:
    from .test_cli_archive import write_toy_run

    run = tmp_path / "old"
    write_toy_run(run)
    entries = json.loads(CliRunner().invoke(audit_command, [str(run), "--json"]).output)
    assert all(e["kind"] in ("sandbox_level", "stop", "damage") for e in entries)
    with RunArchive(run) as archive:
        answer = top_rows(archive, 3)
        assert best_row(archive) == answer.rows[0]
    assert answer.standing == "all" and "older than oversight" in answer.note
    assert [r["standing"] for r in answer.rows] == ["candidate"] * len(answer.rows)


# ---- hooks in files other engineers own ---------------------------------------------------------------------------


def test_evolve_eval_prints_the_standing_line() -> None:
    from evolve.cli import main

    program = PROBLEM / "seed.py"
    result = CliRunner().invoke(main, ["eval", str(PROBLEM), str(program)])
    assert result.exit_code == 0, result.output
    assert "standing: promoted" in result.output and "held-out heldout_score = " in result.output


def test_the_commands_are_registered_in_the_archive_group() -> None:
    from evolve.cli_archive import archive

    assert {"approve", "reject", "release", "audit"} <= set(archive.commands)


def test_top_lists_promoted_programs_by_default_and_show_prints_the_decision(run_dir: Path) -> None:
    from evolve.cli_archive import show, top

    rows = json.loads(CliRunner().invoke(top, [str(run_dir), "--json"]).output)
    assert pid_of(MEMORISER) not in {r["program_id"] for r in rows} and rows[0]["standing"] == "promoted"
    every = json.loads(CliRunner().invoke(top, [str(run_dir), "--standing", "all", "--json"]).output)
    assert every[0]["program_id"] == pid_of(MEMORISER) and every[0]["standing"] == "overfit"
    shown = CliRunner().invoke(show, [str(run_dir), pid_of(MEMORISER), "--no-code"])
    assert "standing: overfit" in shown.output


def test_the_report_has_an_oversight_section(run_dir: Path, tmp_path: Path) -> None:
    from evolve.report import write_report

    text = write_report(run_dir, tmp_path / "report.html").read_text()
    assert '<h2 id="oversight">Oversight</h2>' in text and 'id="best-promoted"' in text
