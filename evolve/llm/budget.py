"""Budgets and accounting of LLM calls: calls, tokens and cost, with limits that stop the run.

A call reserves its place before it is sent, so concurrent calls never exceed ``--max-llm-calls``; a call that gets no
answer (retries exhausted, a malformed answer every time, the endpoint down) gives its reservation back, since it was
not billed. Tokens and cost are known only when an answer arrives: the limits are checked when a call is reserved and
again right before each attempt is sent (``check_spend``), so the calls in flight when a limit is crossed may
overshoot it by at most the calls in flight then (never more than ``max_concurrency``). Tokens a server bills for a
malformed answer (an empty answer with usage) are spent without counting a call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class BudgetLimit(StrEnum):
    """A limit, named by its ``evolve run`` flag."""

    CALLS = "--max-llm-calls"
    TOKENS = "--max-tokens"
    COST = "--max-cost"


class BudgetExhausted(RuntimeError):
    def __init__(self, limit: BudgetLimit, message: str):
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class Usage:
    """Totals so far."""

    calls: int = 0  # answered calls (each a completion the endpoint produced, so billed)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Budget:
    """Thread-safe accounting against optional limits (``None`` means unlimited)."""

    def __init__(self, max_calls: int | None = None, max_tokens: int | None = None, max_cost: float | None = None):
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self._lock = threading.Lock()
        self._usage = Usage()
        self._reserved = 0  # calls sent and not yet answered or abandoned
        self.unanswered = 0  # reserved calls given back without an answer (not counted against --max-llm-calls)

    def reserve(self) -> None:
        """Claim one call, or raise ``BudgetExhausted`` naming the first limit reached."""
        with self._lock:
            u = self._usage
            if self.max_calls is not None and u.calls + self._reserved >= self.max_calls:
                raise BudgetExhausted(BudgetLimit.CALLS, f"LLM budget reached: {BudgetLimit.CALLS.value} "
                                      f"{self.max_calls} ({u.calls} calls answered{self._pending_note()})")
            self._check_spend()
            self._reserved += 1

    def check_spend(self) -> None:
        """Raise ``BudgetExhausted`` if the token or cost limit is reached (checked again right before sending)."""
        with self._lock:
            self._check_spend()

    def _check_spend(self) -> None:
        u = self._usage
        if self.max_tokens is not None and u.tokens >= self.max_tokens:
            raise BudgetExhausted(BudgetLimit.TOKENS, f"LLM budget reached: {BudgetLimit.TOKENS.value} "
                                  f"{self.max_tokens} ({u.tokens} tokens used in {u.calls} calls)")
        if self.max_cost is not None and u.cost >= self.max_cost:
            raise BudgetExhausted(BudgetLimit.COST, f"LLM budget reached: {BudgetLimit.COST.value} "
                                  f"{self.max_cost:g} USD (${u.cost:.4f} spent in {u.calls} calls)")

    def _pending_note(self) -> str:
        note = f", {self._reserved} in flight" if self._reserved else ""
        if self.unanswered:
            note += f"; {self.unanswered} calls without an answer were not counted"
        return note

    def release(self, sent: bool = True) -> None:
        """Give back a reserved call that was not billed: sent without getting an answer, or never sent."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
            self.unanswered += sent

    def spend(self, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        """Account tokens billed without an answer (a malformed answer that reported its usage); no call is counted."""
        if prompt_tokens or completion_tokens or cost:
            with self._lock:
                u = self._usage
                self._usage = Usage(u.calls, u.prompt_tokens + prompt_tokens, u.completion_tokens + completion_tokens,
                                    u.cost + cost)

    def record(self, prompt_tokens: int, completion_tokens: int, cost: float, reserved: bool = True) -> None:
        """Account an answered call (releasing its reservation)."""
        with self._lock:
            if reserved:
                self._reserved = max(0, self._reserved - 1)
            u = self._usage
            self._usage = Usage(u.calls + 1, u.prompt_tokens + prompt_tokens,
                                u.completion_tokens + completion_tokens, u.cost + cost)

    def restore(self, llm_records: Iterable[dict[str, Any]]) -> None:
        """Count the calls of an earlier session of the same run (the ``llm`` dicts of its archive rows), so that
        limits apply to the whole run across ``--resume``."""
        for rec in llm_records:
            for call in rec.get("calls", ()) if isinstance(rec, dict) else ():
                tokens = (int(call.get("prompt_tokens", 0)), int(call.get("completion_tokens", 0)),
                          float(call.get("cost", 0.0)))
                if call.get("answered"):
                    self.record(*tokens, reserved=False)
                else:
                    self.spend(*tokens)

    @property
    def reserved(self) -> int:
        """Calls reserved and not yet answered or given back."""
        with self._lock:
            return self._reserved

    @property
    def usage(self) -> Usage:
        with self._lock:
            return self._usage

    def limits(self) -> dict[str, Any]:
        return {"max_calls": self.max_calls, "max_tokens": self.max_tokens, "max_cost": self.max_cost}
