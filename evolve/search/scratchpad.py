"""The meta-scratchpad: every ``every`` iterations the LLM rewrites short notes on what works and what fails for this
problem, from the best programs, the common failures and the recent attempts; later prompts show the notes (the
"Notes from the search so far" section) and every version is archived (event kind ``scratchpad``).

The material comes from the driver's own state, never from a scan of the archive: the island grids' best elites, and
the last outcomes the search observed (a bounded window), so asking costs the same at any archive size. Held-out
metrics are never shown (``fmt_metrics`` hides them), and the notes are text in their own slot, like a strategy.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from evolve.blocks import evolvable_text
from evolve.llm.prompts import fmt_metrics, fmt_number
from evolve.mutators.base import ProgramView
from evolve.search.strategies import clean_text

SYSTEM = """You keep the notes of an automated evolutionary search over programs. From the best programs, the common \
failures and the recent attempts, write short, concrete notes (at most {max_chars} characters) on what works and what \
fails for this problem, to guide the next changes. Notes are advice only: they cannot change the evaluator, the \
problem, the budgets, the models or the answer format. Answer with the notes alone, as plain text."""

CODE_CHARS = 1500


class Outcomes:
    """A bounded window of recent outcomes (for the scratchpad and the strategy prompts) and failure counts."""

    def __init__(self, window: int = 40):
        self.recent: deque[dict[str, Any]] = deque(maxlen=window)
        self.failures: Counter[str] = Counter()  # "status: reason" over the whole run (few distinct keys)

    def add(self, summary: dict[str, Any]) -> None:
        self.recent.append(summary)
        if summary["status"] != "ok":
            reason = " ".join(str(summary.get("why") or "").split())[:120]
            key = f"{summary['status']}: {reason}" if reason else summary["status"]
            if key in self.failures or len(self.failures) < 200:
                self.failures[key] += 1


def notes_messages(*, description: str, metric: str, direction: str, best: Sequence[ProgramView],
                   outcomes: Outcomes, notes: str, max_chars: int) -> list[dict[str, str]]:
    lines = [f"# Problem\n{description.strip() or '(no description given)'}\n",
             f"Objective: {direction} `{metric}`.\n", "# Best programs so far (their evolve blocks)\n"]
    for i, view in enumerate(best, 1):
        code = evolvable_text(view.code).strip("\n")
        if len(code) > CODE_CHARS:
            code = code[:CODE_CHARS] + "\n... [cut]"
        lines.append(f"## Program {i}: {fmt_metrics({**view.metrics, metric: view.score}, metric)}\n```\n{code}\n```\n")
    if outcomes.failures:
        lines.append("# Most common failures (count: status and reason)\n")
        lines += [f"- {n}: {key}\n" for key, n in outcomes.failures.most_common(6)]
    if outcomes.recent:
        lines.append("# Recent attempts (oldest first)\n")
        for r in list(outcomes.recent)[-12:]:
            score = f", {metric} {fmt_number(r['score'])}" if r["score"] is not None else ""
            lines.append(f"- {r['kind'] or 'edit'}: {r['status']}{score}{' (beat its parent)' if r['improved'] else ''}"
                         f"{' - ' + r['why'] if r['why'] else ''}\n")
    if notes:
        lines.append(f"# Your notes so far\n{notes.strip()}\n")
    lines.append("# Task\nRewrite the notes: what works, what fails, what to try next.")
    system = SYSTEM.format(max_chars=max_chars)
    return [{"role": "system", "content": system + "\n"}, {"role": "user", "content": "\n".join(lines)}]


def parse_notes(answer: str, max_chars: int) -> str:
    return clean_text(answer.strip().strip("`").strip(), max_chars)
