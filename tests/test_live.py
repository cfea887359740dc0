"""Live progress: the rich panel's content, its refresh throttle, and the fallback to plain lines off a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from evolve.live import RichProgress, make_progress, remaining_seconds, render_snapshot
from evolve.progress import LineProgress, ProgressSnapshot, QuietProgress


def snapshot(**changes: object) -> ProgressSnapshot:
    values: dict[str, object] = {
        "elapsed": 30.0, "done": 40, "budget": 100, "best_score": 2.6358, "best_program": "0123456789abcdef",
        "evals_per_second": 1.5, "in_flight": {"validate": 3, "benchmark": 0, "mutating": 2},
        "statuses": {"ok": 30, "wrong_output": 6, "timeout": 1, "invalid_edit": 3}, "duplicates": 2,
        "coverage": {0: 0.25, 1: 0.5}, "time_limit": None, "llm": {},
    }
    values.update(changes)
    return ProgressSnapshot(**values)  # type: ignore[arg-type]


def render(s: ProgressSnapshot) -> str:
    console = Console(file=io.StringIO(), width=110, color_system=None)
    console.print(render_snapshot(s))
    return console.file.getvalue()  # type: ignore[attr-defined]


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_panel_shows_budget_best_speed_flight_failures_and_coverage() -> None:
    text = render(snapshot())
    assert "40/100 iterations (40%)" in text
    assert "2.6358" in text and "0123456789abcdef" in text
    assert "1.50 evaluations/s" in text
    assert "validate 3" in text and "mutating 2" in text and "benchmark" not in text  # idle stages hidden
    assert "ok 30" in text and "wrong_output 6" in text and "timeout 1" in text and "invalid_edit 3" in text
    assert "(25% failed)" in text and "duplicates skipped 2" in text
    assert "island 0" in text and "25%" in text and "island 1" in text and "50%" in text
    assert "llm" not in text  # no LLM in this run
    assert "Ctrl-C" in text


def test_panel_shows_llm_cost_and_time_budget() -> None:
    llm = {"calls": 41, "tokens": 123456, "cost": 0.4321, "in_flight": 3, "limit": 12, "max_concurrency": 32}
    s = snapshot(llm=llm, time_limit=120.0)
    text = render(s)
    assert "41 calls, 123,456 tokens, $0.4321; in flight 3 (limit 12 of 32)" in text
    assert "failed calls" not in text and "retries" not in text  # nothing failed: no failure row
    assert "elapsed 30s of 2m00s limit" in text
    # 60 iterations left at 40 per 30 s is 45 s; the time limit leaves 90 s: the sooner wins.
    assert remaining_seconds(s) == pytest.approx(45.0)
    assert remaining_seconds(snapshot(time_limit=40.0)) == pytest.approx(10.0)
    assert remaining_seconds(snapshot(done=0)) is None
    assert "no scored program yet" in render(snapshot(best_score=None, best_program=None))


def test_panel_and_lines_show_llm_failures_by_kind_retries_and_time_since_the_last_answer() -> None:
    llm = {"calls": 5, "tokens": 900, "cost": 0.0, "failed_calls": 3, "retries": 11, "no_answer": 2,
           "failed_by_kind": {"bad_json": 2, "timeout": 1}, "since_answer": 95.0}
    text = render(snapshot(llm=llm))
    row = "3 failed calls (bad_json 2, timeout 1), 11 retries, 2 proposals without answer, last good answer 1m35s ago"
    assert "llm failures" in text and row in " ".join(text.replace("│", " ").split())
    out = io.StringIO()
    LineProgress(out).update(snapshot(llm=llm), force=True)
    assert row in out.getvalue()


def test_rich_progress_prints_messages_throttles_and_keeps_the_final_panel() -> None:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=100, color_system=None),
                            refresh_per_second=0.001)
    progress.message("evaluating the seed program abc")
    progress.update(snapshot(done=1), force=True)
    progress.update(snapshot(done=2))  # within the refresh interval: not drawn
    progress.update(snapshot(done=3), force=True)
    progress.close()
    text = out.getvalue()
    assert "evaluating the seed program abc" in text
    assert "1/100 iterations" in text and "3/100 iterations" in text and "2/100 iterations" not in text
    progress.close()  # idempotent


def test_close_draws_the_last_snapshot_even_if_throttled() -> None:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=100, color_system=None),
                            refresh_per_second=0.001)
    progress.update(snapshot(done=5), force=True)
    progress.update(snapshot(done=100))
    progress.close()
    assert "100/100 iterations" in out.getvalue()


def test_make_progress_picks_by_output() -> None:
    assert isinstance(make_progress(quiet=True), QuietProgress)
    assert isinstance(make_progress(quiet=False, stream=io.StringIO()), LineProgress)
    live = make_progress(quiet=False, stream=TTY())
    assert isinstance(live, RichProgress)
    live.close()


def test_line_fallback_writes_plain_lines() -> None:
    out = io.StringIO()
    progress = make_progress(quiet=False, stream=out)
    progress.update(snapshot(), force=True)
    progress.close()
    line = out.getvalue()
    assert "iter 40/100" in line and "\x1b[" not in line


def test_panel_shows_the_top_failure_reasons() -> None:
    reasons = (("wrong_output", "circle <n> leaves the unit square by <n>", 12),
               ("timeout", "stage 'validate' exceeded <n> s", 3))
    text = render(snapshot(failures=reasons))
    assert "top failures" in text
    assert "12 wrong_output circle <n> leaves the unit square by <n>" in text
    assert "3  timeout" in text or "3 timeout" in text
    assert "top failures" not in render(snapshot())  # nothing failed: no row


def test_near_copies_rejected_before_evaluation_are_not_failures() -> None:
    """``not_novel`` children were never evaluated (like duplicates): neither the panel nor the log line counts them
    as failures (evolve.types.NOT_FAILURES)."""
    from evolve.progress import format_snapshot

    s = snapshot(statuses={"ok": 30, "not_novel": 10, "wrong_output": 10})
    assert "not_novel" not in render(s) and "(20% failed)" in render(s)
    assert "failures: wrong_output=10 " in format_snapshot(s)
