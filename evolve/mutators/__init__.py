"""Mutators: the seam (``base``) and the built-in implementations, chosen by name."""

from __future__ import annotations

from typing import Any

from evolve.mutators.base import (
    Attempt,
    LearningMutator,
    MutationOutcome,
    MutationRequest,
    Mutator,
    MutatorStopped,
    ProgramView,
    Proposal,
)
from evolve.problem import Problem

MUTATORS = ("tune", "scripted", "llm")


def build_mutator(name: str, problem: Problem, options: dict[str, Any] | None = None) -> Mutator:
    """Construct the named mutator. ``options`` carries CLI settings (LLM endpoint, models, budgets)."""
    options = options or {}
    if name == "tune":
        from evolve.mutators.tune import TuneMutator

        return TuneMutator()
    if name == "scripted":
        from evolve.mutators.scripted import ScriptedMutator

        return ScriptedMutator()
    if name == "llm":
        from evolve.mutators.llm import build_from_options

        return build_from_options(problem, options)
    raise ValueError(f"unknown mutator {name!r} (choose from {', '.join(MUTATORS)})")


__all__ = [
    "MUTATORS",
    "Attempt",
    "LearningMutator",
    "MutationOutcome",
    "MutationRequest",
    "Mutator",
    "MutatorStopped",
    "ProgramView",
    "Proposal",
    "build_mutator",
]
