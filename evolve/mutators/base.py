"""The mutator seam: given a parent (and context), return an LLM-style answer that edits it.

Every mutator, the offline ones included, answers in the same text formats an LLM uses (SEARCH/REPLACE blocks or
a full rewrite of the evolve blocks), so one parsing path (``evolve.edits``) turns every answer into a child.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ProgramView:
    """What a mutator may see of an archived program."""

    program_id: str
    code: str
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    artifacts: dict[str, str] = field(default_factory=dict)
    island: int = 0
    generation: int = 0


@dataclass(frozen=True)
class Attempt:
    """A recent child of the same lineage and how it fared (for prompts)."""

    edit: str
    status: str
    score: float | None
    summary: str = ""


@dataclass(frozen=True)
class MutationRequest:
    parent: ProgramView
    iteration: int
    seed: int  # per-iteration seed derived by the driver; mutators must not use any other randomness
    language: str = "python"
    description: str = ""
    score_metric: str = "score"
    score_direction: str = "maximize"
    inspirations: tuple[ProgramView, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    notes: str = ""  # a person's steering notes for the prompt (evolve.steering.prompt_notes), "" when none
    # Search choices (evolve.search); the defaults are a plain mutation in the mutator's own edit mode.
    kind: str = ""  # "diff", "full" or "crossover"; "" the mutator's own mode
    partner: ProgramView | None = None  # the second parent of a crossover
    strategy: str = ""  # the co-evolved strategy's text, for its one slot in the prompt
    scratchpad: str = ""  # the search's notes on what works and what fails
    search: Any = None  # the search layer's own context for this child (evolve.search.engine); mutators ignore it


@dataclass(frozen=True)
class Proposal:
    """A mutator's answer. ``response`` is parsed by ``evolve.edits.apply_response``."""

    response: str
    mutator: str  # recorded in the archive's ``mutator`` column, e.g. "tune" or "llm:gpt-4o-mini"
    prompt: str = ""  # JSON text of the messages sent, when an LLM was asked
    llm: dict[str, Any] = field(default_factory=dict)  # model, tokens, cost, latency
    child_code: str | None = None  # set when the mutator already applied (and validated) its own answer
    # Set when the mutator (or the search layer) already tried to apply ``response`` and could not: why
    # (``EditResult.error``), so that the driver records it without applying the answer again.
    edit_error: str = ""
    # Why there is no answer at all (the endpoint failed every retry: errors, timeouts, malformed bodies). Not the
    # parent's nor the child's fault: the driver asks again, or records an infrastructure failure, never an edit
    # the mutator got wrong. ``prompt`` and ``llm`` still hold the audit of the calls made.
    no_answer: str = ""


class MutatorStopped(RuntimeError):
    """The mutator cannot go on (endpoint down past its patience, a budget reached). The run stops cleanly."""


@runtime_checkable
class Mutator(Protocol):
    """Produces one proposal per call. Implementations must be thread-safe if ``concurrent`` is true."""

    name: str

    def propose(self, request: MutationRequest) -> Proposal: ...


@dataclass(frozen=True)
class MutationOutcome:
    """What became of a proposal, fed back to mutators that learn (the LLM bandit)."""

    status: str  # evolve.types.Status value of the child ("invalid_edit" when the answer was unusable)
    parent_fitness: float | None
    child_fitness: float | None
    edit_error: str = ""

    @property
    def improved(self) -> bool:
        return (
            self.child_fitness is not None
            and self.parent_fitness is not None
            and self.child_fitness > self.parent_fitness
        )


@runtime_checkable
class ConcurrentMutator(Mutator, Protocol):
    """Optional extension: mutators that wait on a remote service (an LLM endpoint) and are called from a thread
    pool, sized apart from evaluation concurrency. ``max_concurrency`` bounds the pool; ``desired_in_flight`` is how
    many ``propose`` calls the driver should keep in flight now (it follows what the endpoint accepts)."""

    max_concurrency: int

    def desired_in_flight(self) -> int: ...


@runtime_checkable
class LearningMutator(Mutator, Protocol):
    """Optional extension: mutators that adapt to outcomes and report statistics."""

    def observe(self, proposal: Proposal, outcome: MutationOutcome) -> None: ...

    def stats(self) -> dict[str, Any]: ...
