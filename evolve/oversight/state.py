"""The oversight state of a run: each checked program's standing, the contenders for the top-k, the best promoted.

Only programs oversight has looked at are held (those that would enter the top-k, those a tripwire caught), so the
state stays small whatever the run's size. It is a pure function of the run's oversight events (``rebuild``), which
is how a resume gets it back exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from evolve.mutators.base import ProgramView
from evolve.oversight import events as ev
from evolve.oversight.standing import Standing
from evolve.schema import ProgramRecord
from evolve.types import Status

Key = tuple[float, int, str]  # (-fitness, iteration, program_id): ascending is best first, as in the database


@dataclass
class Watched:
    """What oversight knows of one program."""

    program_id: str
    key: Key
    score: float | None
    standing: Standing = Standing.CANDIDATE
    checks: int = 0  # checks started
    decided: int = 0  # checks decided
    reason: str = ""  # why the last check started
    tripwires: set[str] = field(default_factory=set)  # kinds that quarantined it and are not lifted
    released: bool = False  # a quarantine lifted (by a clean re-check or a person): not quarantined again

    @property
    def pending(self) -> bool:
        return self.checks > self.decided

    @property
    def contender(self) -> bool:
        """Counts for the top-k: promoted, or being checked because it would enter it."""
        return self.standing is Standing.PROMOTED or (self.pending and self.reason != "quarantine")


def key_of(fitness: float, iteration: int, program_id: str) -> Key:
    return (-float(fitness), int(iteration), program_id)


@dataclass(frozen=True)
class Subject:
    """The program a check is about."""

    program_id: str
    code: str
    key: Key
    score: float | None
    metrics: dict[str, float]
    island: int
    generation: int

    @property
    def iteration(self) -> int:
        return self.key[1]

    @property
    def fitness(self) -> float:
        return -self.key[0]

    def view(self) -> ProgramView:
        return ProgramView(program_id=self.program_id, code=self.code, score=self.score, metrics=dict(self.metrics),
                           status=Status.OK.value, island=self.island, generation=self.generation)

    @classmethod
    def of_record(cls, record: ProgramRecord) -> Subject:
        assert record.fitness is not None
        return cls(record.program_id, record.code, key_of(record.fitness, record.iteration, record.program_id),
                   record.score, dict(record.metrics), record.island, record.generation)


class OversightState:
    def __init__(self, top_k: int = 1):
        self.top_k = top_k
        self.watched: dict[str, Watched] = {}
        self._contenders: list[Key] = []
        self.views: dict[str, ProgramView] = {}  # promoted programs, for the best promoted (its code)
        self.anomalies: dict[str, list[tuple[str, str]]] = {}  # visible-cascade anomalies, by program
        self.arrival_tripped: set[str] = set()  # programs a tripwire caught on arrival (out of the jump history)

    # -- queries ------------------------------------------------------------------------------------------------

    def standing(self, program_id: str) -> Standing:
        w = self.watched.get(program_id)
        return Standing.CANDIDATE if w is None else w.standing

    def qualifies(self, key: Key) -> bool:
        """Whether a program of this key would enter the top-k of the contenders."""
        return bisect.bisect_left(self._contenders, key) < self.top_k

    def unchecked(self, program_id: str) -> bool:
        """Never checked, or released and not being checked: may be checked when it would enter the top-k."""
        w = self.watched.get(program_id)
        return w is None or (w.standing is Standing.CANDIDATE and not w.pending and (w.released or w.checks == 0))

    def pending(self) -> list[Watched]:
        return sorted((w for w in self.watched.values() if w.pending), key=lambda w: w.key)

    def excluded(self) -> list[str]:
        return [pid for pid, w in self.watched.items() if w.standing.excluded]

    def best(self) -> Watched | None:
        """The best promoted program."""
        for key in self._contenders:
            w = self.watched[key[2]]
            if w.standing is Standing.PROMOTED:
                return w
        return None

    def best_view(self) -> ProgramView | None:
        best = self.best()
        return None if best is None else self.views.get(best.program_id)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.watched.values():
            out[w.standing.value] = out.get(w.standing.value, 0) + 1
        return out

    # -- changes ------------------------------------------------------------------------------------------------

    def _watch(self, program_id: str, key: Key, score: float | None) -> Watched:
        w = self.watched.get(program_id)
        if w is None:
            w = self.watched[program_id] = Watched(program_id, key, score)
        return w

    def _sync(self, w: Watched) -> None:
        i = bisect.bisect_left(self._contenders, w.key)
        present = i < len(self._contenders) and self._contenders[i] == w.key
        if w.contender and not present:
            self._contenders.insert(i, w.key)
        elif not w.contender and present:
            del self._contenders[i]

    def start_check(self, program_id: str, key: Key, score: float | None, reason: str) -> int:
        """A check starts; returns its number for the program."""
        w = self._watch(program_id, key, score)
        number = w.checks
        w.checks += 1
        w.reason = reason
        self._sync(w)
        return number

    def decide(self, program_id: str, key: Key, score: float | None, standing: Standing, check: int | None,
               *, tripwires: Iterable[str] = (), released: bool = False) -> None:
        w = self._watch(program_id, key, score)
        w.standing = standing
        if check is not None:
            w.decided = max(w.decided, check + 1)
        if released:
            w.released = True
            w.tripwires.clear()
        w.tripwires.update(tripwires)
        if standing is not Standing.QUARANTINED:
            w.tripwires.clear()
        self._sync(w)

    # -- rebuilding ---------------------------------------------------------------------------------------------

    @classmethod
    def rebuild(cls, events: Iterable[dict[str, Any]], top_k: int) -> OversightState:
        """The state the run had, from its oversight events in recorded order (``events.event_rows``)."""
        state = cls(top_k)
        for row in events:
            pid, kind, data = row.get("program_id"), row.get("kind"), row.get("data") or {}
            if not pid:
                continue
            if kind == ev.ANOMALY:
                state.anomalies.setdefault(pid, []).append((str(data.get("stage", "")), str(data.get("anomaly", ""))))
                continue
            if kind == ev.TRIPWIRE and data.get("phase") == ev.ARRIVAL:
                state.arrival_tripped.add(pid)
            if kind not in (ev.CHECK, ev.STANDING, ev.RELEASE):
                continue
            w = state.watched.get(pid)
            if w is None:
                if "fitness" not in data:
                    continue  # a release of a program never seen: nothing to rebuild
                w = state._watch(pid, key_of(data["fitness"], data.get("iteration", 0), pid), data.get("score"))
            if kind == ev.CHECK:
                w.checks = max(w.checks, int(data.get("check", 0)) + 1)
                w.reason = str(data.get("reason", ""))
            elif kind == ev.RELEASE:
                w.released = True
                w.tripwires.clear()
            else:
                check = data.get("check")
                state.decide(pid, w.key, w.score, Standing(data.get("standing", "candidate")),
                             int(check) if isinstance(check, int) else None,
                             tripwires=data.get("tripwires") or (), released=bool(data.get("released")))
            state._sync(w)
        return state
