"""How many LLM calls may be in flight at once, adapted to what the endpoint accepts (AIMD, as TCP does).

The limit starts at ``start`` and grows while answers come back cleanly: by one per answer until the first sign of
overload (slow start: it doubles every round of answers), then by one per round (``1 / limit`` per answer). A sign of
overload (429, 5xx, a timeout) cuts it by ``decrease`` (half), never below ``minimum``, and the limit it fell to
becomes the point where growth turns linear again. Two rules keep it honest:

- one cut per round: a call sent before the latest cut was sent under the old limit, so its overload answer is not
  a new signal (a burst of 429s from one round halves the limit once, not once per 429);
- growth only while the limit is used: an answer counts toward growth only if at least half of the limit was in
  flight when its call was sent or answered, so an idle or sequential run does not inflate a limit it never tested.

Only HTTP attempts hold a slot: a call waiting out its backoff does not. ``maximum`` is a hard cap. The limiter is
deterministic (no clock, no randomness): the same sequence of acquisitions and signals gives the same limits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Signal(StrEnum):
    """What one attempt says about the endpoint's load."""

    ANSWERED = "answered"  # a clean answer: room to grow
    OVERLOADED = "overloaded"  # 429, 5xx, a timeout: fewer calls
    NEUTRAL = "neutral"  # anything else (refused, malformed, connection refused): says nothing about load


class LimiterClosed(RuntimeError):
    """``close()`` was called: no more slots are handed out."""


@dataclass(frozen=True)
class Slot:
    """One attempt's place in flight."""

    epoch: int  # the number of cuts made before this attempt was sent
    busy: bool  # at least half of the limit was in flight when it was sent (checked again at its answer)


class AdaptiveLimiter:
    """A thread-safe, adaptive cap on concurrent attempts. ``acquire`` blocks while the limit is reached."""

    def __init__(self, start: int, maximum: int, minimum: int = 1, decrease: float = 0.5):
        if maximum < 1 or minimum < 1 or minimum > maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got minimum={minimum}, maximum={maximum}")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be in (0, 1), got {decrease}")
        self.maximum = maximum
        self.minimum = minimum
        self.decrease = decrease
        self._limit = float(min(maximum, max(minimum, start)))
        self._threshold = float(maximum)  # slow start below, linear growth above
        self._in_flight = 0
        self._epoch = 0
        self._peak = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def limit(self) -> int:
        with self._cond:
            return int(self._limit)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a free slot (at most ``timeout`` seconds: then ``TimeoutError``). Raises ``LimiterClosed``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._in_flight < int(self._limit), timeout):
                raise TimeoutError("no LLM call slot became free")
            if self._closed:
                raise LimiterClosed("the LLM client was closed")
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            return Slot(self._epoch, busy=2 * self._in_flight >= self._limit)

    def release(self, slot: Slot, signal: Signal) -> None:
        """Give the slot back, with what its attempt said about the endpoint's load."""
        with self._cond:
            busy = slot.busy or 2 * self._in_flight >= self._limit
            self._in_flight = max(0, self._in_flight - 1)
            if signal is Signal.ANSWERED and busy and self._limit < self.maximum:
                step = 1.0 if self._limit < self._threshold else 1.0 / self._limit
                self._limit = min(float(self.maximum), self._limit + step)
            elif signal is Signal.OVERLOADED and slot.epoch == self._epoch:
                self._limit = max(float(self.minimum), self._limit * self.decrease)
                self._threshold = self._limit
                self._epoch += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {"limit": int(self._limit), "max": self.maximum, "in_flight": self._in_flight,
                    "peak": self._peak, "cuts": self._epoch}
