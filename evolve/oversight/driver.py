"""Oversight in the live run: checks a program before it counts as best, trips wires, keeps standings.

A mixin of ``Evolution`` (``evolve.loop``). When a program that evaluated ok arrives (``_oversee``):

1. tripwires that need nothing but the program and the run's history fire at once (a score beyond ``[score]
   bound``, a jump far beyond the run's recent improvements, an evaluator-declared anomaly): the program is
   quarantined (never a parent, inspiration or migrant) and, unless the tripwire is one only a person can lift,
   re-checked;
2. otherwise, if its visible fitness would enter the top-k of the contenders (programs promoted or being checked),
   it is checked: the held-out stages run on seeds the candidate and the prompts never see, and the visible cascade
   runs ``reevaluations`` more times with other seeds, all as Ray tasks next to the evolution's own. Until its
   verdict it is no parent, inspiration or migrant;
3. the check's verdict (``evolve.oversight.standing.judge``) gives the standing. A contender that is not promoted
   leaves the contenders, and the best unchecked elites are reconsidered in its place.

Everything is recorded as events (``evolve.oversight.events``); nothing of it reaches a program row, so no prompt
can show it. In deterministic mode the next batch waits for the checks, and their verdicts are applied in iteration
order, so the run stays a function of its seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evolve.evaluation import split_anomaly
from evolve.oversight import events as ev
from evolve.oversight.standing import (
    CascadeResult,
    JumpWatch,
    Standing,
    TripwireHit,
    Verdict,
    anomaly_hits,
    bound_hit,
    judge,
)
from evolve.oversight.state import OversightState, Subject
from evolve.problem import StageSpec
from evolve.schema import truncate_artifact
from evolve.types import StageOutcome, Status
from evolve.worker import heldout_seed, reevaluation_seed, system_error

if TYPE_CHECKING:
    from evolve.archive import ArchiveWriter
    from evolve.database import ProgramDatabase
    from evolve.problem import Problem
    from evolve.progress import Progress, ProgressSnapshot
    from evolve.records import Child
    from evolve.run_report import RunSummary
    from evolve.schema import ProgramRecord
    from evolve.settings import RunSettings
    from evolve.worker import RayStageExecutor

HELDOUT_TRACK = "heldout"


@dataclass
class Track:
    """One cascade of a check: the held-out stages, or one re-evaluation of the visible stages."""

    name: str
    stages: tuple[StageSpec, ...]
    seed: int
    index: int = 0
    attempts: int = 0
    outcomes: list[StageOutcome] = field(default_factory=list)
    anomalies: list[tuple[str, str]] = field(default_factory=list)
    done: bool = False

    def result(self) -> CascadeResult:
        return CascadeResult(tuple(self.outcomes), tuple(self.anomalies))


@dataclass
class Check:
    subject: Subject
    number: int
    reason: str
    tracks: list[Track]

    @property
    def done(self) -> bool:
        return all(t.done for t in self.tracks)


class Oversight:
    """Mixin of ``Evolution`` (which provides the attributes declared here)."""

    problem: Problem
    settings: RunSettings
    db: ProgramDatabase
    executor: RayStageExecutor
    progress: Progress
    next_iteration: int
    stop_reason: Any
    writer: ArchiveWriter | None

    def _init_oversight(self) -> None:
        self.oversight = OversightState(self.problem.oversight.top_k)
        self.jump_watch = JumpWatch(self.problem.oversight)
        self.check_refs: dict[Any, tuple[Check, Track]] = {}
        self.checks_done: list[Check] = []  # deterministic mode: decided together once none is in flight

    _check_target: Callable[[float | None, str], None]  # provided by Evolution

    # ------------------------------------------------------------------ events
    def _event(self, kind: str, program_id: str, data: dict[str, Any], event_id: str | None = None) -> None:
        assert self.writer is not None
        self.writer.record_event(kind, ev.payload(data), program_id=program_id,
                                 iteration=max(0, self.next_iteration - 1), event_id=event_id)

    def _standing_event(self, subject: Subject, standing: Standing, previous: Standing, check: int | None,
                        reasons: list[str] | tuple[str, ...], **extra: Any) -> None:
        data = {"standing": standing.value, "previous": previous.value, "check": check, "reasons": list(reasons),
                "fitness": subject.fitness, "score": subject.score, "iteration": subject.iteration, **extra}
        self._event(ev.STANDING, subject.program_id, data,
                    ev.event_id(ev.STANDING, subject.program_id, ev.ARRIVAL if check is None else check))

    # ------------------------------------------------------------------ arrivals
    def _on_anomaly(self, child: Child, stage: str, anomaly: str) -> None:
        """An evaluator declared an anomaly on a visible stage of ``child`` (kept out of its row)."""
        child.anomalies.append((stage, anomaly))
        self._event(ev.ANOMALY, child.program_id, {"stage": stage, "anomaly": anomaly, "iteration": child.iteration},
                    ev.event_id(ev.ANOMALY, child.program_id, stage))

    def _oversee(self, child: Child, record: ProgramRecord) -> None:
        """Every row the loop integrates comes here: tripwires, then a check if it would enter the top-k."""
        if record.status != Status.OK.value or record.fitness is None:
            return
        subject = Subject.of_record(record)
        anomalies = self.oversight.anomalies.get(record.program_id, []) if child.replayed else child.anomalies
        hits: list[TripwireHit] = [h for h in (bound_hit(self.problem.score, record.score),
                                               self.jump_watch.check(record.fitness)) if h is not None]
        hits += anomaly_hits(anomalies, "visible")
        watched = self.oversight.watched.get(record.program_id)
        if hits and not (watched is not None and watched.released):
            self._quarantine_on_arrival(subject, hits)
            return
        self.jump_watch.record(record.fitness)
        if self.oversight.unchecked(record.program_id) and self.oversight.qualifies(subject.key):
            self._start_check(subject, "top_k")

    def _quarantine_on_arrival(self, subject: Subject, hits: list[TripwireHit]) -> None:
        pid = subject.program_id
        self.oversight.arrival_tripped.add(pid)
        for hit in hits:
            self._event(ev.TRIPWIRE, pid, {**hit.to_dict(), "phase": ev.ARRIVAL, "iteration": subject.iteration},
                        ev.event_id(ev.TRIPWIRE, pid, ev.ARRIVAL, hit.kind.value))
        previous = self.oversight.standing(pid)
        kinds = [h.kind.value for h in hits]
        self.oversight.decide(pid, subject.key, subject.score, Standing.QUARANTINED, None, tripwires=kinds)
        self._standing_event(subject, Standing.QUARANTINED, previous, None, [h.message for h in hits],
                             tripwires=kinds)
        self.db.exclude(pid)
        self.progress.message(f"tripwire: {pid} quarantined ({'; '.join(h.message for h in hits)})")
        if all(h.kind.auto_release for h in hits):
            self._start_check(subject, "quarantine")

    # ------------------------------------------------------------------ checks
    def _start_check(self, subject: Subject, reason: str, number: int | None = None) -> None:
        """Record and launch a check (``number`` given: a check recorded earlier, launched again on resume)."""
        if number is None:
            number = self.oversight.start_check(subject.program_id, subject.key, subject.score, reason)
            self._event(ev.CHECK, subject.program_id,
                        {"check": number, "reason": reason, "fitness": subject.fitness, "score": subject.score,
                         "iteration": subject.iteration, "visible": subject.metrics.get(self.problem.visible_metric)},
                        ev.event_id(ev.CHECK, subject.program_id, number))
        # Not a parent, an inspiration or a migrant until its check clears it.
        self.db.exclude(subject.program_id)
        spec, run_seed = self.problem.oversight, self.settings.seed
        tracks = []
        if self.problem.heldout_stages:
            tracks.append(Track(HELDOUT_TRACK, self.problem.heldout_stages, heldout_seed(run_seed, subject.program_id)))
        for i in range(spec.reevaluations):
            tracks.append(Track(f"reevaluation {i + 1}", self.problem.stages,
                                reevaluation_seed(run_seed, subject.program_id, i)))
        check = Check(subject, number, reason, tracks)
        if not tracks:
            self._decide(check)
            return
        for track in tracks:
            self._submit_track(check, track)

    def _submit_track(self, check: Check, track: Track) -> None:
        ref = self.executor.submit_stage(track.stages[track.index], check.subject.code, check.subject.program_id,
                                         track.seed)
        track.attempts += 1
        self.check_refs[ref] = (check, track)

    def _oversight_busy(self) -> bool:
        return bool(self.check_refs or self.checks_done)

    def _waiting_for_parents(self) -> bool:
        """Every elite is being checked (or excluded): new children wait for a verdict rather than fail."""
        return self._oversight_busy() and self.db.best_allowed() is None

    def _on_check_stage(self, ref: Any) -> None:
        check, track = self.check_refs.pop(ref)
        stage = track.stages[track.index]
        outcome = self.executor.stage_result(ref, stage)
        if outcome is None:
            if track.attempts <= self.settings.max_system_retries:
                self._submit_track(check, track)
                return
            outcome = system_error(stage, track.attempts)
        outcome, anomaly = split_anomaly(outcome)
        if anomaly:
            track.anomalies.append((stage.name, anomaly))
        track.outcomes.append(outcome)
        if outcome.passed and track.index + 1 < len(track.stages):
            track.index += 1
            track.attempts = 0
            self._submit_track(check, track)
            return
        track.done = True
        if not check.done:
            return
        if not self.settings.deterministic:
            self._decide(check)
            return
        # Deterministic mode: decide every finished check once none is in flight, in iteration order, so that the
        # standings (and the parents they allow) do not depend on which evaluation finished first.
        self.checks_done.append(check)
        while self.checks_done and not self.check_refs:
            batch, self.checks_done = sorted(self.checks_done, key=lambda c: c.subject.key[1:]), []
            for done in batch:
                self._decide(done)

    # ------------------------------------------------------------------ verdicts
    def _verdict(self, check: Check) -> Verdict:
        heldout = next((t.result() for t in check.tracks if t.name == HELDOUT_TRACK), None)
        reevaluations = [t.result() for t in check.tracks if t.name != HELDOUT_TRACK]
        return judge(self.problem.oversight, self.problem.score.sign,
                     check.subject.metrics.get(self.problem.visible_metric), heldout, self.problem.heldout_metric,
                     reevaluations, self.problem.visible_metric)

    def _decide(self, check: Check) -> None:
        subject, pid = check.subject, check.subject.program_id
        verdict = self._verdict(check)
        watched = self.oversight.watched.get(pid)
        released_before = watched is not None and watched.released
        previous = self.oversight.standing(pid)
        standing, release = verdict.standing, False
        if standing is Standing.QUARANTINED and released_before:
            # A person lifted a quarantine: the wires that fired then do not fire again for this program.
            standing = _without_tripwires(verdict)
        if check.reason == "quarantine":
            # Only a clean check lifts a quarantine; overfit says more and keeps it out just the same; flaky or
            # inconclusive leaves the quarantine in place (a jump that does not reproduce is no cleared jump).
            if standing is Standing.PROMOTED:
                release = True
            elif standing is not Standing.OVERFIT:
                standing = Standing.QUARANTINED
        self._record_check(check, verdict)
        if release:
            self._event(ev.RELEASE, pid, {"by": ev.AUTO, "note": "re-checked clean: held-out agrees and the score "
                                          "reproduces", "check": check.number})
        was_contender = watched is not None and watched.contender
        kinds = [h.kind.value for h in verdict.tripwires] if standing is Standing.QUARANTINED else []
        self.oversight.decide(pid, subject.key, subject.score, standing, check.number, tripwires=kinds,
                              released=release)
        self._standing_event(subject, standing, previous, check.number, verdict.reasons, released=release,
                             tripwires=kinds, **verdict.numbers())
        if standing.excluded:
            self.db.exclude(pid)
        else:
            self.db.include(pid)
        if standing is not previous:
            self.progress.message(f"oversight: {pid} {standing.value} ({'; '.join(verdict.reasons)[:300]})")
        if standing is Standing.PROMOTED:
            self.oversight.views[pid] = subject.view()
            self._check_target(subject.score, pid)
        elif was_contender:
            self._reconsider()

    def _record_check(self, check: Check, verdict: Verdict) -> None:
        pid = check.subject.program_id
        for track in check.tracks:
            if track.name != HELDOUT_TRACK:
                continue
            self._event(ev.HELDOUT, pid, {
                "check": check.number, "stages": [_stage_data(o) for o in track.outcomes],
                "metric": self.problem.heldout_metric, "visible_metric": self.problem.visible_metric,
                "visible": verdict.visible, "heldout": verdict.heldout, "behind": verdict.behind,
                "allowance": verdict.allowance, "agrees": verdict.heldout_agrees,
                "anomalies": [list(a) for a in track.anomalies]}, ev.event_id(ev.HELDOUT, pid, check.number))
        runs = [t for t in check.tracks if t.name != HELDOUT_TRACK]
        if runs:
            self._event(ev.REEVALUATION, pid, {
                "check": check.number, "metric": self.problem.visible_metric, "visible": verdict.visible,
                "runs": [{"status": t.result().status.value, "score": value, "message": t.result().message,
                          "seconds": sum(o.seconds for o in t.outcomes)}
                         for t, value in zip(runs, verdict.reevaluated, strict=True)],
                "reproduces": verdict.reproduces, "spread": verdict.spread,
                "allowance": verdict.reproduce_allowance}, ev.event_id(ev.REEVALUATION, pid, check.number))
        for hit in verdict.tripwires:
            self._event(ev.TRIPWIRE, pid, {**hit.to_dict(), "phase": ev.CHECKED, "check": check.number},
                        ev.event_id(ev.TRIPWIRE, pid, check.number, hit.kind.value))

    def _reconsider(self) -> None:
        """A contender left: check the best unchecked elites that would now enter the top-k (O(islands x k))."""
        k = self.oversight.top_k
        found: dict[str, Subject] = {}
        for island in range(self.db.n_islands):
            for view in self.db.top_elites(island, k + len(self.oversight.watched)):
                key = self.db.fitness_key(view.program_id)
                if key is not None and self.oversight.unchecked(view.program_id):
                    found[view.program_id] = Subject(view.program_id, view.code, key, view.score,
                                                     dict(view.metrics), view.island, view.generation)
        for subject in sorted(found.values(), key=lambda s: s.key):
            if self.oversight.qualifies(subject.key):
                self._start_check(subject, "reconsider")

    # ------------------------------------------------------------------ resume
    def _restore_oversight(self, state: OversightState | None, subjects: dict[str, Subject],
                           fitness_in_order: Iterable[float]) -> None:
        """After a resume: the standings from the events, the jump history, pending checks launched again."""
        if state is not None:
            self.oversight = state
        for pid, subject in subjects.items():
            w = self.oversight.watched.get(pid)
            if w is not None and w.standing is Standing.PROMOTED:
                self.oversight.views[pid] = subject.view()
        self.jump_watch.replay(fitness_in_order)
        for w in self.oversight.pending():
            subject = subjects.get(w.program_id)
            if subject is not None:
                self._start_check(subject, w.reason or "resume", number=w.checks - 1)
        self._reconsider()

    # ------------------------------------------------------------------ what the run reports
    def _summary(self) -> RunSummary:
        summary = super()._summary()  # type: ignore[misc]
        return dataclasses.replace(summary, best=self.oversight.best_view())

    def _stats(self) -> dict[str, Any]:
        stats = super()._stats()  # type: ignore[misc]
        visible = self.db.best()
        best = self.oversight.best_view()
        stats.update({
            "best_score": best.score if best else None,
            "best_program": best.program_id if best else None,
            "best_visible_score": visible.score if visible else None,
            "best_visible_program": visible.program_id if visible else None,
            "standings": self.oversight.counts(),
        })
        return stats

    def _snapshot(self) -> ProgressSnapshot:
        snapshot = super()._snapshot()  # type: ignore[misc]
        best = self.oversight.best_view()
        in_flight = dict(snapshot.in_flight)
        if self.check_refs:
            in_flight["checking"] = len(self.check_refs)  # held-out stages and re-evaluations
        return dataclasses.replace(snapshot, best_score=best.score if best else None,
                                   best_program=best.program_id if best else None, in_flight=in_flight)


def _without_tripwires(verdict: Verdict) -> Standing:
    if verdict.heldout_agrees is False:
        return Standing.OVERFIT
    if verdict.reproduces is False:
        return Standing.FLAKY
    return Standing.CANDIDATE if verdict.inconclusive else Standing.PROMOTED


def _stage_data(outcome: StageOutcome) -> dict[str, Any]:
    return {"stage": outcome.stage, "status": outcome.status.value, "metrics": dict(outcome.metrics),
            "artifacts": {k: truncate_artifact(v) for k, v in outcome.artifacts.items()},
            "message": outcome.message, "seconds": outcome.seconds, "isolation": outcome.isolation}
