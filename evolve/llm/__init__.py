"""LLM access for the mutator: settings, the Chat Completions client, prompts, model choice and budgets.

See ``evolve/llm/README.md`` for the ``[llm]`` and ``[prompt]`` tables and the precedence of settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evolve.llm.budget import Budget, BudgetExhausted, BudgetLimit, Usage
from evolve.llm.choice import ModelChooser
from evolve.llm.client import CallFailed, ChatAnswer, ChatClient, EndpointDown
from evolve.llm.failures import FailureKind, MalformedAnswer
from evolve.llm.limiter import AdaptiveLimiter
from evolve.llm.probe import EndpointError, ProbeReport, probe
from evolve.llm.prompts import PromptBuilder, PromptSettings, resolve_prompt_settings
from evolve.llm.settings import (
    LLMConfigError,
    LLMSettings,
    ModelSpec,
    default_user_config_path,
    resolve_llm_settings,
)

if TYPE_CHECKING:
    from evolve.mutators.llm import LLMMutator
    from evolve.problem import Problem


def build_llm_mutator(settings: LLMSettings, problem: Problem | None = None) -> LLMMutator:
    """An ``LLMMutator`` for ``problem`` (imported lazily: ``evolve.mutators.llm`` imports this package)."""
    from evolve.mutators.llm import build_llm_mutator as build

    return build(settings, problem)


def __getattr__(name: str) -> Any:
    if name == "LLMMutator":
        from evolve.mutators.llm import LLMMutator

        return LLMMutator
    raise AttributeError(name)


__all__ = [
    "AdaptiveLimiter",
    "Budget",
    "BudgetExhausted",
    "BudgetLimit",
    "CallFailed",
    "ChatAnswer",
    "ChatClient",
    "EndpointDown",
    "EndpointError",
    "FailureKind",
    "LLMConfigError",
    "LLMMutator",
    "LLMSettings",
    "MalformedAnswer",
    "ModelChooser",
    "ModelSpec",
    "ProbeReport",
    "PromptBuilder",
    "PromptSettings",
    "Usage",
    "build_llm_mutator",
    "default_user_config_path",
    "probe",
    "resolve_llm_settings",
    "resolve_prompt_settings",
]
