"""Progress reporting seam for the run loop. Plain log lines here; richer views plug in the same way."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO


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


class Progress(Protocol):
    def message(self, text: str) -> None: ...

    def update(self, snapshot: ProgressSnapshot, force: bool = False) -> None: ...

    def close(self) -> None: ...


def format_snapshot(s: ProgressSnapshot) -> str:
    best = "-" if s.best_score is None else f"{s.best_score:.6g} ({s.best_program})"
    failures = {k: v for k, v in s.statuses.items() if k not in ("ok", "duplicate") and v}
    fails = ", ".join(f"{k}={v}" for k, v in sorted(failures.items())) or "none"
    flight = ", ".join(f"{k}={v}" for k, v in s.in_flight.items() if v) or "idle"
    cover = " ".join(f"{i}:{c:.0%}" for i, c in sorted(s.coverage.items()))
    line = (f"[{s.elapsed:7.1f}s] iter {s.done}/{s.budget}  best {best}  {s.evals_per_second:.1f} eval/s  "
            f"in flight: {flight}  failures: {fails}  duplicates: {s.duplicates}  coverage {cover}")
    if s.llm:
        line += f"  llm calls {s.llm.get('calls', 0)} tokens {s.llm.get('tokens', 0)} cost ${s.llm.get('cost', 0):.4f}"
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
