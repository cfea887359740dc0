"""Deterministic mode's batches: children made in fixed-size batches from the state after the previous batch, and
integrated in iteration order, so the same seed gives the same archive at any concurrency and after any kill.

A batch torn by a kill or a stop (some of its rows written, others not) is completed on resume: the loop rebuilds
the state before the batch (``evolve.resume``), proposes the batch again, takes the children already recorded from
the archive instead of making them again (no LLM call is paid twice), evaluates the rest, and integrates the whole
batch in order, writing only what is not yet written.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from evolve.mutators.base import MutationRequest, Proposal
from evolve.records import Child, queued_for_evaluation, replayed_child
from evolve.resume import BatchReplay
from evolve.schema import ProgramRecord

if TYPE_CHECKING:
    from evolve.settings import RunSettings


class DeterministicBatches:
    """Mixin of ``Evolution`` (which provides the attributes and methods declared here)."""

    settings: RunSettings
    batch: list[Child]
    queue: list[Child]
    jobs: dict[Any, Child]
    pool: cf.ThreadPoolExecutor | None
    in_flight_ids: set[str]
    replay: BatchReplay | None
    stop_reason: Any
    done: int
    statuses: Counter[str]

    # provided by Evolution
    concurrency: int
    _new_child: Callable[[], Child]
    _timed_propose: Callable[[MutationRequest], tuple[Proposal, float]]
    _take_proposal: Callable[[Child, Callable[[], tuple[Proposal, float]]], Proposal | None]
    _on_proposal: Callable[[Child, Proposal | None], None]
    _submit: Callable[[Child], None]
    _integrate: Callable[[Child, ProgramRecord], None]
    _append: Callable[[Child, ProgramRecord], None]

    def _fill_deterministic(self) -> None:
        if not self.batch:
            size = min(self.settings.batch_size, self.settings.iterations - self.done)
            for _ in range(max(0, size)):
                self.batch.append(self._new_child())
            replay = self.replay if self.batch and self.replay and self.batch[0].iteration == self.replay.start \
                else None
            recorded = replay.recorded if replay is not None else {}
            # Proposals come from the same database state whatever the concurrency, and are used in iteration
            # order; a pooled (LLM) mutator answers the whole batch at once.
            futures = {}
            if self.pool is not None:
                futures = {id(c): self.pool.submit(self._timed_propose, c.request)
                           for c in self.batch if c.iteration not in recorded}
            replayed_ids: list[str] = []
            for child in list(self.batch):
                if child.iteration in recorded:
                    replayed_child(child, recorded[child.iteration])
                    assert child.record is not None
                    if queued_for_evaluation(child.record) and child.program_id not in self.in_flight_ids:
                        # As in the live run, its id was in flight while the rest of the batch was proposed.
                        self.in_flight_ids.add(child.program_id)
                        replayed_ids.append(child.program_id)
                    continue
                request = child.request
                assert request is not None
                get = futures[id(child)].result if futures else (lambda r=request: self._timed_propose(r))
                proposal = self._take_proposal(child, get)
                if self.stop_reason is not None:
                    return
                self._on_proposal(child, proposal)
            for program_id in replayed_ids:
                self.in_flight_ids.discard(program_id)
        while self.queue and len(self.jobs) < self.concurrency:
            self._submit(self.queue.pop(0))
        if self.batch and all(c.record is not None for c in self.batch):
            self._flush_batch()

    def _flush_batch(self) -> None:
        """Integrate the batch's finished children in iteration order.

        After a stop only the unbroken prefix is integrated; children that finished after a gap are written (their
        work is kept) but not integrated, so that a resume completes the batch exactly as an uninterrupted run
        would have.
        """
        prefix = True
        for child in self.batch:
            if child.record is None:
                prefix = False
            elif prefix:
                self._integrate(child, child.record)
            else:
                self._append(child, child.record)
        self.batch = []
        self.replay = None
