"""People's steering in the audit trail: each pin, ban and note of ``steering.jsonl`` is an entry (who, when, what,
which program, the note's text) in ``evolve archive audit`` (text and JSON) and the report's Oversight section; a
damaged line is listed as damage and does not stop the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.cli_oversight import audit_command
from evolve.oversight.audit import audit, steering_entries
from evolve.oversight.html import oversight_html
from evolve.query import RunArchive
from evolve.steering import append_action, make_action, steering_path
from tests.oversight_problem.programs import MEMORISER, honest

from .test_oversight_runs import PROBLEM, in_order, local_run, pid_of

HOSTILE_NOTE = 'prefer <script>window.__pwned=1</script> "><img src=x onerror="window.__pwned=2">'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("audit_steering") / "run"
    local_run(PROBLEM, run, in_order(honest(2), MEMORISER, honest(3)), 3)
    best, memoriser = pid_of(honest(3)), pid_of(MEMORISER)
    append_action(run, make_action("pin", program_id=best, who="ana", source="ui", at=2_000_000_000.0))
    append_action(run, make_action("ban", program_id=memoriser, who="bo", source="cli", at=2_000_000_001.0))
    with steering_path(run).open("a") as log:  # a line no writer could have made, then a valid one after it
        log.write('{"action": "nuke", "program_id": "x"}\n')
    append_action(run, make_action("note", text=HOSTILE_NOTE, who="", source="ui", at=2_000_000_002.0))
    return run


def test_each_steering_action_is_an_audit_entry_and_damage_is_listed(run_dir: Path) -> None:
    entries = steering_entries(run_dir)
    steering = [e for e in entries if e.kind == "steering"]
    assert [(e.numbers["action"], e.program_id, e.at) for e in steering] == [
        ("pin", pid_of(honest(3)), 2_000_000_000.0), ("ban", pid_of(MEMORISER), 2_000_000_001.0),
        ("note", "", 2_000_000_002.0)]
    assert steering[0].summary == "pin by ana via ui" and steering[1].numbers["who"] == "bo"
    assert steering[2].summary == f"note by someone unnamed via ui: {HOSTILE_NOTE}"
    assert steering[2].numbers["text"] == HOSTILE_NOTE
    damaged = [e for e in entries if e.kind == "damage"]
    assert len(damaged) == 1 and "steering.jsonl line 3 ignored" in damaged[0].summary
    assert "nuke" in damaged[0].summary and damaged[0].numbers["line"] == 3
    with RunArchive(run_dir) as archive:
        trail = audit(archive)
    kinds = [e.kind for e in trail]
    assert kinds.count("steering") == 3 and "overfit" in kinds  # alongside oversight's own entries
    assert [e.at for e in trail] == sorted(e.at for e in trail)


def test_audit_command_and_report_show_steering(run_dir: Path) -> None:
    text = CliRunner().invoke(audit_command, [str(run_dir)])
    assert text.exit_code == 0, text.output
    assert "steering" in text.output and "ban by bo via cli" in text.output and "line 3 ignored" in text.output
    entries = json.loads(CliRunner().invoke(audit_command, [str(run_dir), "--json"]).output)
    notes = [e for e in entries if e["kind"] == "steering" and e["numbers"]["action"] == "note"]
    assert notes[0]["numbers"]["text"] == HOSTILE_NOTE and notes[0]["at"].startswith("2033-05-18")
    with RunArchive(run_dir) as archive:
        html = oversight_html(archive)
    assert "pin by ana via ui" in html and "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html


def test_a_run_without_a_steering_log_has_no_steering_entries(tmp_path: Path) -> None:
    assert steering_entries(tmp_path) == []
    steering_path(tmp_path).write_text("not json\n")
    (only,) = steering_entries(tmp_path)
    assert only.kind == "damage" and "line 1 ignored" in only.summary
