"""Progress reporting seam for the run loop. Plain log lines here; richer views plug in the same way."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from evolve.types import NOT_FAILURES


@dataclass(frozen=True)
class ProgressSnapshot:
    """What the loop knows at one moment; cheap to build (counters only, nothing scanned)."""

    elapsed: float
    done: int  # iterations finished (evaluated, rejected edits and skipped duplicates)
    budget: int
    best_score: float | None
    best_program: str | None
    evals_per_second: float
    in_flight: dict[str, int]  # stage name (or "mutating") -> count
    statuses: dict[str, int]
    duplicates: int
    coverage: dict[int, float]  # island -> fraction of occupied cells
    time_limit: float | None = None
    llm: dict[str, Any] = field(default_factory=dict)
    failures: tuple[tuple[str, str, int], ...] = ()  # the top failure reasons: (status, normalised reason, count)


class Progress(Protocol):
    def message(self, text: str) -> None: ...

    def update(self, snapshot: ProgressSnapshot, force: bool = False) -> None: ...

    def close(self) -> None: ...


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def llm_usage(llm: Mapping[str, Any]) -> str:
    """Calls, tokens and cost, and the calls in flight against their adaptive limit (from the mutator's totals)."""
    text = f"{llm.get('calls', 0)} calls, {llm.get('tokens', 0):,} tokens, ${float(llm.get('cost', 0.0)):.4f}"
    if "limit" in llm:
        text += f"; in flight {llm.get('in_flight', 0)} (limit {llm['limit']} of {llm.get('max_concurrency', '?')})"
    return text


def llm_trouble(llm: Mapping[str, Any]) -> str:
    """Failed calls by kind, retries and the time since the last good answer; empty while nothing failed."""
    failed, retries = int(llm.get("failed_calls", 0) or 0), int(llm.get("retries", 0) or 0)
    if not failed and not retries:
        return ""
    kinds = llm.get("failed_by_kind") or {}
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    parts = [f"{failed} failed calls" + (f" ({by_kind})" if by_kind else ""), f"{retries} retries"]
    if llm.get("no_answer"):
        parts.append(f"{llm['no_answer']} proposals without answer")
    if llm.get("since_answer") is not None:
        parts.append(f"last good answer {duration(float(llm['since_answer']))} ago")
    return ", ".join(parts)


def llm_summary_lines(stats: Mapping[str, Any]) -> list[str]:
    """The LLM part of the run's final summary (the mutator's ``stats()``); empty for other mutators."""
    totals = stats.get("totals")
    if not isinstance(totals, Mapping):
        return []
    lines = [f"llm: {totals.get('calls', 0)} calls, {totals.get('tokens', 0)} tokens, "
             f"${totals.get('cost', 0.0):.4f}, unusable answers {totals.get('unusable_rate', 0.0):.0%}, "
             f"mean latency {totals.get('mean_latency', 0.0):.2f} s"]
    trouble = llm_trouble(totals)
    if trouble:
        lines.append(f"  failures: {trouble}")
    concurrency = stats.get("concurrency")
    if isinstance(concurrency, Mapping):
        lines.append(f"  calls in flight: limit {concurrency.get('limit')} of {concurrency.get('max')} at the end, "
                     f"peak {concurrency.get('peak')}, cut {concurrency.get('cuts')} times on 429/5xx/timeouts")
    for name, model in (stats.get("models") or {}).items():
        lines.append(f"  {name}: {model.get('calls', 0)} calls, {model.get('tokens', 0)} tokens, "
                     f"${model.get('cost', 0.0):.4f}, unusable {model.get('unusable_rate', 0.0):.0%}, "
                     f"improved the parent {model.get('improvement_rate', 0.0):.0%}, "
                     f"latency {model.get('mean_latency', 0.0):.2f} s"
                     + (f", {model['failed_calls']} failed calls" if model.get("failed_calls") else ""))
    return lines


def format_snapshot(s: ProgressSnapshot) -> str:
    best = "-" if s.best_score is None else f"{s.best_score:.6g} ({s.best_program})"
    failures = {k: v for k, v in s.statuses.items() if k not in NOT_FAILURES and v}
    fails = ", ".join(f"{k}={v}" for k, v in sorted(failures.items())) or "none"
    flight = ", ".join(f"{k}={v}" for k, v in s.in_flight.items() if v) or "idle"
    cover = " ".join(f"{i}:{c:.0%}" for i, c in sorted(s.coverage.items()))
    line = (f"[{s.elapsed:7.1f}s] iter {s.done}/{s.budget}  best {best}  {s.evals_per_second:.1f} eval/s  "
            f"in flight: {flight}  failures: {fails}  duplicates: {s.duplicates}  coverage {cover}")
    if s.llm:
        line += f"  llm {llm_usage(s.llm)}"
        trouble = llm_trouble(s.llm)
        if trouble:
            line += f"; {trouble}"
    return line


class LineProgress:
    """One line every ``interval`` seconds; suits logs and non-terminal output."""

    def __init__(self, stream: TextIO | None = None, interval: float = 2.0):
        self.stream = stream or sys.stdout
        self.interval = interval
        self._last = 0.0

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, snapshot: ProgressSnapshot, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self.message(format_snapshot(snapshot))

    def close(self) -> None:
        pass


class QuietProgress:
    """Discards everything (tests, benchmarks)."""

    def message(self, text: str) -> None:
        pass

    def update(self, snapshot: ProgressSnapshot, force: bool = False) -> None:
        pass

    def close(self) -> None:
        pass
