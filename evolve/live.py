"""Live progress of a run in the terminal (rich), or plain periodic lines when output is not a terminal.

``make_progress(quiet)`` picks the right one. ``RichProgress`` redraws a small panel a few times per second: budget
used and remaining (iterations and time), the best score and its program, evaluations per second, work in flight
per stage, failures by status and the most frequent failure reasons (messages with their numbers, ids and paths
normalised away: ``evolve.failures``), MAP-Elites coverage per island, and when an LLM is used its calls, tokens, cost and
calls in flight (against their adaptive limit), then, once calls fail, failed calls by kind, retries and the time
since the last good answer.
Messages from the loop print above the panel. ``close`` leaves the final panel on screen.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from evolve.progress import (
    LineProgress,
    Progress,
    ProgressSnapshot,
    QuietProgress,
    duration,
    llm_trouble,
    llm_usage,
)
from evolve.types import NOT_FAILURES

BAR_WIDTH = 20


def _bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(round(fraction * width))
    return "█" * full + "░" * (width - full)


def remaining_seconds(s: ProgressSnapshot) -> float | None:
    """Estimated seconds left: the time limit if it binds sooner, else the iterations left at the current rate."""
    estimates = []
    if s.time_limit is not None:
        estimates.append(s.time_limit - s.elapsed)
    left = s.budget - s.done
    if s.done > 0 and s.elapsed > 0:
        estimates.append(left * s.elapsed / s.done)
    return min(estimates) if estimates else None


def render_snapshot(s: ProgressSnapshot, title: str = "evolve") -> Panel:
    """The panel for one snapshot (pure: testable without a terminal)."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    fraction = s.done / s.budget if s.budget else 0.0
    left = remaining_seconds(s)
    budget = f"{_bar(fraction)} {s.done}/{s.budget} iterations ({fraction:.0%})"
    head.add_row("progress", budget)
    timing = f"elapsed {duration(s.elapsed)}"
    if s.time_limit is not None:
        timing += f" of {duration(s.time_limit)} limit"
    if left is not None:
        timing += f", about {duration(left)} left"
    head.add_row("time", timing)
    if s.best_score is None:
        head.add_row("best", Text("no scored program yet", style="dim"))
    else:
        head.add_row("best", Text.assemble((f"{s.best_score:.8g}", "bold green"), f"  program {s.best_program}"))
    head.add_row("speed", f"{s.evals_per_second:.2f} evaluations/s")
    flight = ", ".join(f"{k} {v}" for k, v in s.in_flight.items() if v) or "idle"
    head.add_row("in flight", flight)
    total = sum(s.statuses.values())
    failures = {k: v for k, v in sorted(s.statuses.items()) if k not in NOT_FAILURES and v}
    outcome = Text(f"ok {s.statuses.get('ok', 0)}", style="green")
    for name, count in failures.items():
        outcome.append(f"  {name} {count}", style="red" if name != "invalid_edit" else "yellow")
    if total:
        outcome.append(f"  ({sum(failures.values()) / total:.0%} failed)", style="dim")
    if s.duplicates:
        outcome.append(f"  duplicates skipped {s.duplicates}", style="dim")
    head.add_row("outcomes", outcome)
    if s.failures:
        reasons = Table.grid(padding=(0, 1))
        for status, reason, count in s.failures:
            reasons.add_row(Text(f"{count}", style="red"), Text(status, style="red"),
                            Text(reason or "(no message)", overflow="ellipsis", no_wrap=True))
        head.add_row("top failures", reasons)
    if s.coverage:
        cover = Table.grid(padding=(0, 1))
        for island, fraction_covered in sorted(s.coverage.items()):
            cover.add_row(f"island {island}", _bar(fraction_covered, 10), f"{fraction_covered:.0%}")
        head.add_row("coverage", cover)
    if s.llm:
        head.add_row("llm", llm_usage(s.llm))
        trouble = llm_trouble(s.llm)
        if trouble:
            # Red once the endpoint has gone a while without a good answer: the run may be about to stop.
            quiet = float(s.llm.get("since_answer") or 0.0) > 60
            head.add_row("llm failures", Text(trouble, style="red" if quiet else "yellow"))
    return Panel(head, title=title, title_align="left", border_style="blue",
                 subtitle="Ctrl-C stops; the run can be resumed", subtitle_align="right")


class RichProgress:
    """A live panel on a terminal. Thread-safe enough for the loop: every call comes from the driver thread."""

    def __init__(self, console: Console | None = None, title: str = "evolve", refresh_per_second: float = 4.0):
        self.console = console or Console()
        self.title = title
        self.min_interval = 1.0 / refresh_per_second
        self._last = 0.0
        self._snapshot: ProgressSnapshot | None = None
        self._live: Live | None = None

    def _ensure_live(self) -> Live:
        if self._live is None:
            self._live = Live(console=self.console, auto_refresh=False, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self._live

    def message(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    def update(self, snapshot: ProgressSnapshot, force: bool = False) -> None:
        self._snapshot = snapshot
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        live = self._ensure_live()
        live.update(Group(render_snapshot(snapshot, self.title)), refresh=True)

    def close(self) -> None:
        if self._live is not None:
            if self._snapshot is not None:
                self._live.update(Group(render_snapshot(self._snapshot, self.title)), refresh=True)
            self._live.stop()
            self._live = None


def make_progress(quiet: bool, stream: TextIO | None = None, **options: Any) -> Progress:
    """Quiet: nothing. A terminal: the live panel. Anything else (a log file, a pipe, CI): a line every few
    seconds."""
    if quiet:
        return QuietProgress()
    stream = stream or sys.stdout
    if stream.isatty():
        return RichProgress(Console(file=stream), **options)
    return LineProgress(stream)
