"""Making children: picking a parent and inspirations, asking the mutator, and turning its answer into a child.

A mixin of ``Evolution`` (``evolve.loop``). The parent comes from the island's MAP-Elites grid unless a person
steered the run (``evolve.steering``: pins, bans, notes). A ``[search]`` table (``evolve.search``) may change how the
parent is picked and add, per child, a mutation kind, a crossover partner, a co-evolved strategy, the search's notes
and a novelty check: children too similar to their parent or their island's elites are recorded as ``not_novel``
and not evaluated, as exact copies are recorded as ``duplicate``. Without the table none of it is there. A pooled (LLM) mutator keeps as many proposals in flight
as its endpoint accepts (``desired_in_flight``), separately from the evaluations, which follow the cluster's slots.
An iteration whose mutator got no answer at all (its endpoint failed every retry) is asked again, and in the end
recorded as an infrastructure failure, never as the child's fault.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evolve.edits import apply_response
from evolve.mutators.base import MutationRequest, Mutator, MutatorStopped, ProgramView, Proposal
from evolve.records import Child
from evolve.resume import RunRefused
from evolve.run_report import StopReason
from evolve.search.engine import (
    EVENT_KINDS,
    SearchEngine,
    SearchMutator,
    check_search,
    describe_verdict,
    is_not_novel,
)
from evolve.search.settings import SearchConfigError, SearchSettings, resolve_search_settings
from evolve.steering import DriverSteering, prompt_notes
from evolve.types import StageOutcome, Status, program_id_for

if TYPE_CHECKING:
    from evolve.database import ProgramDatabase
    from evolve.problem import Problem
    from evolve.progress import Progress
    from evolve.settings import RunSettings


class Breeding:
    """Mixin of ``Evolution`` (which provides the attributes and methods declared here)."""

    problem: Problem
    settings: RunSettings
    mutator: Mutator
    run_dir: Path
    db: ProgramDatabase
    progress: Progress
    sign: float
    next_iteration: int
    done: int
    duplicates: int
    jobs: dict[Any, Child]
    mutations: dict[cf.Future[tuple[Proposal, float]], Child]
    queue: list[Child]
    in_flight_ids: set[str]
    pool: cf.ThreadPoolExecutor | None
    stop_reason: Any
    edit_mode: Any
    steering: DriverSteering
    search: SearchEngine | None
    resume: bool
    # The run's [search] settings when the caller resolved them (with its flags) and checked them against the
    # mutator already (`evolve run`, before Ray starts); None: resolved and checked here, from the problem's table.
    search_settings: SearchSettings | None = None

    # provided by Evolution
    concurrency: int
    _submit: Callable[[Child], None]
    _finish: Callable[[Child], None]
    _stop: Callable[[StopReason, str], None]
    _writer: Callable[[], Any]

    def _init_steering(self) -> None:
        """Breeding's own state, made once per session (``Evolution.__init__``): steering and the search layer."""
        # A person's pins, bans and notes (evolve ui, evolve steer), read from RUN/steering.jsonl at most once a
        # second; a resumed run reads the whole log again, so steering survives resume.
        self.steering = DriverSteering(self.run_dir, key=lambda v: v.program_id, load=self._breedable_view,
                                       report=self.progress.message,
                                       breedable=lambda pid: not self.db.is_excluded(pid))
        self._init_search()

    def _init_search(self) -> None:
        """The ``[search]`` table's choices; the run's mutator is wrapped so the loop's own seams (``propose``,
        ``observe``) carry them. Nothing changes without the table."""
        self.search = None
        settings, checked = self.search_settings, self.search_settings is not None
        if settings is None:
            try:
                settings = resolve_search_settings(self.problem.sections.get("search"))
            except SearchConfigError as exc:
                raise RunRefused(f"{self.problem.root / 'problem.toml'}: {exc}") from None
        if settings.default:
            return
        try:
            if not checked:
                check_search(settings, self.mutator)
            engine = SearchEngine(
                settings, mutator=self.mutator, islands=self.settings.islands, run_seed=self.settings.seed,
                database_rate=self.settings.exploitation, sign=self.sign, deterministic=self.settings.deterministic,
                description=self.problem.description, metric=self.problem.score.metric,
                direction=self.problem.score.direction, language=self.problem.language,
                record_event=self._record_search_event, load_events=self._search_events if self.resume else None,
                best_views=self._best_views, report=self.progress.message,
                capacity=max(4096, 2 * self.settings.islands * self.db.n_cells))
        except SearchConfigError as exc:
            raise RunRefused(str(exc)) from None
        self.search = engine
        self.mutator = SearchMutator(self.mutator, engine)

    def _record_search_event(self, kind: str, data: Any, iteration: int, event_id: str) -> None:
        self._writer().record_event(kind, data, iteration=iteration, event_id=event_id)

    def _search_events(self) -> list[dict[str, Any]]:
        """The strategies and notes an earlier session recorded (read once, when this session makes its first
        child)."""
        import json

        from evolve.archive import read_events

        rows = read_events(self.run_dir, kinds=EVENT_KINDS).to_pylist()
        return [{**row, "data": json.loads(row["data"]) if row.get("data") else {}} for row in rows]

    def _best_views(self) -> list[ProgramView]:
        """The best elite of each island, best first (material for the search's notes)."""
        views = [e[0] for e in (self.db.elites(i) for i in range(self.db.n_islands)) if e]
        unique = {v.program_id: v for v in views}
        return sorted(unique.values(), key=lambda v: -(self._fitness_of(v) or float("-inf")))[:3]

    def _in_flight(self) -> int:
        return len(self.jobs) + len(self.mutations) + len(self.queue)

    def _fill(self) -> None:
        while self.queue and len(self.jobs) < self.concurrency:
            self._submit(self.queue.pop(0))
        while self._room_to_mutate() and self._can_start():
            child = self._new_child()
            self._mutate(child)
            if self.stop_reason is not None:
                return

    def _room_to_mutate(self) -> bool:
        if self.pool is None:  # an inline mutator: one bound for mutating and evaluating, as ever
            return self._in_flight() < self.concurrency
        # A pooled (LLM) mutator waits on its endpoint, not on CPUs: keep as many proposals in flight as the endpoint
        # accepts, while the children waiting for an evaluation slot stay within one round of evaluations.
        return len(self.mutations) < self._mutation_limit() and len(self.queue) < self.concurrency

    def _mutation_limit(self) -> int:
        desired = getattr(self.mutator, "desired_in_flight", None)
        if desired is None:
            return self.concurrency
        try:
            return max(1, int(desired()))
        except Exception:  # noqa: BLE001 - sizing advice must never stop a run
            return self.concurrency

    def _can_start(self) -> bool:
        return self.done + self._in_flight() < self.settings.iterations

    def _new_child(self) -> Child:
        iteration = self.next_iteration
        self.next_iteration += 1
        island = iteration % self.settings.islands
        rng = np.random.default_rng([self.settings.seed, iteration])
        steer = self.steering.poll()
        search = self.search
        plan = search.begin(iteration, island) if search is not None else None

        def sample() -> ProgramView:
            if search is None or plan is None:
                return self.db.sample_parent(island, rng)
            return search.pick_parent(plan, self.db, rng)

        parent = self.steering.parent(
            steer, sample, rng, fallback=lambda: (v for i in range(self.db.n_islands) for v in self.db.elites(i)))
        if parent is None:
            raise RunRefused(f"every elite of {self.run_dir} is banned: unban one (evolve steer RUN unban PROGRAM), "
                             "then resume")
        k = self.settings.inspirations
        inspirations = self.steering.inspirations(steer, self.db.inspirations(
            island, k + min(k, len(steer.banned)), rng, exclude=parent.program_id), k)
        child = Child(iteration=iteration, island=island, parent=parent,
                      inspirations=tuple(p.program_id for p in inspirations))
        child.request = MutationRequest(
            parent=parent,
            iteration=iteration,
            seed=int(rng.integers(2**63 - 1)),
            language=self.problem.language,
            description=self.problem.description,
            score_metric=self.problem.score.metric,
            score_direction=self.problem.score.direction,
            inspirations=inspirations,
            attempts=self.db.attempts(parent.program_id),
            notes=prompt_notes(steer),
        )
        if search is not None and plan is not None:
            child.request = search.finish(plan, child.request, self.db)
        return child

    def _breedable_view(self, program_id: str) -> ProgramView | None:
        """A pinned program's view: the elite, else its archived row if it evaluated ok (asked once per pin)."""
        view = self.db.view(program_id)
        if view is not None:
            return view
        from evolve.query import ArchiveQueryError, RunArchive

        try:
            with RunArchive(self.run_dir) as archive:
                r = archive.program(program_id)
        except (ArchiveQueryError, LookupError):
            return None
        if r.status != Status.OK.value:
            return None
        return ProgramView(program_id=r.program_id, code=r.code, score=r.score, metrics=dict(r.metrics),
                           status=r.status, artifacts=dict(r.artifacts), island=r.island, generation=r.generation)

    def _mutate(self, child: Child) -> None:
        request = child.request
        assert request is not None
        if self.pool is not None:
            future = self.pool.submit(self._timed_propose, request)
            self.mutations[future] = child
            return
        self._on_proposal(child, self._take_proposal(child, lambda: self._timed_propose(request)))

    def _timed_propose(self, request: MutationRequest) -> tuple[Proposal, float]:
        start = time.monotonic()
        return self.mutator.propose(request), time.monotonic() - start

    def _take_proposal(self, child: Child, get: Callable[[], tuple[Proposal, float]]) -> Proposal | None:
        """Run (or collect) one mutation: a stopped mutator stops the run; any other failure is the child's."""
        try:
            proposal, child.mutate_seconds = get()
            return proposal
        except MutatorStopped as exc:
            self._stop(StopReason.MUTATOR, str(exc))
        except Exception as exc:  # noqa: BLE001 - a failing mutator call is recorded, not fatal
            child.edit_error = f"mutator raised {type(exc).__name__}: {exc}"
        return None

    def _on_proposal(self, child: Child, proposal: Proposal | None) -> None:
        if self.stop_reason is not None and proposal is None and not child.edit_error:
            return
        assert child.parent is not None
        if proposal is not None and proposal.no_answer:
            self._on_no_answer(child, proposal)
            return
        child.proposal = proposal
        if proposal is not None:
            if proposal.child_code is not None:
                child.code = proposal.child_code
            elif proposal.llm.get("error") or proposal.edit_error:
                # The mutator (or the search layer) already knows why there is no child: no second application.
                child.edit_error = str(proposal.llm.get("error") or proposal.edit_error)
            else:
                result = apply_response(child.parent.code, proposal.response, self.edit_mode)
                if result.ok:
                    child.code = result.unwrap()
                else:
                    child.edit_error = result.error
        if not child.code:
            answer = proposal.response if proposal else ""
            child.program_id = program_id_for(f"invalid-edit:{child.parent.program_id}:{child.iteration}:{answer}")
            child.outcomes.append(StageOutcome(stage="edit", status=Status.INVALID_EDIT, message=child.edit_error))
            self._finish(child)
            return
        child.program_id = program_id_for(child.code)
        if child.program_id in self.db or child.program_id in self.in_flight_ids:
            # Not evaluated again, but recorded: the iteration (and any LLM call behind it) counts on resume.
            self.duplicates += 1
            twin = child.program_id
            child.edit_error = f"identical to program {twin} (already archived or being evaluated)"
            child.code = ""
            child.program_id = program_id_for(f"duplicate:{child.parent.program_id}:{child.iteration}:{twin}")
            child.outcomes.append(StageOutcome(stage="edit", status=Status.DUPLICATE, message=child.edit_error))
            self._finish(child)
            return
        verdict = is_not_novel(proposal)
        if verdict is not None:
            # Too close to a known program (evolve.search.novelty): recorded with its answer, not evaluated.
            near = child.program_id
            child.edit_error = describe_verdict(verdict)
            child.code = ""
            child.program_id = program_id_for(f"not-novel:{child.parent.program_id}:{child.iteration}:{near}")
            child.outcomes.append(StageOutcome(stage="novelty", status=Status.NOT_NOVEL, message=child.edit_error))
            self._finish(child)
            return
        if self.settings.deterministic or len(self.jobs) >= self.concurrency:
            self.in_flight_ids.add(child.program_id)
            self.queue.append(child)
        else:
            self._submit(child)

    def _on_no_answer(self, child: Child, proposal: Proposal) -> None:
        """The mutator got no answer at all (its endpoint failed every retry): not the child's fault. Ask again for
        the same iteration; after ``max_system_retries`` asks, or once the run is stopping, record an
        infrastructure failure (the row keeps the prompt and every call made)."""
        assert child.parent is not None
        if self.stop_reason is None and child.asks < self.settings.max_system_retries:
            child.asks += 1
            self._mutate(child)
            return
        child.proposal = proposal
        child.program_id = program_id_for(f"no-answer:{child.parent.program_id}:{child.iteration}")
        child.outcomes.append(StageOutcome(stage="mutate", status=Status.SYSTEM_ERROR, message=proposal.no_answer))
        self._finish(child)

    def _fitness_of(self, view: ProgramView) -> float | None:
        return None if view.score is None else view.score * self.sign
