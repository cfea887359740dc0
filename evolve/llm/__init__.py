"""LLM access for the mutator: settings, the Chat Completions client, prompts, model choice and budgets.

See ``evolve/llm/README.md`` for the ``[llm]`` and ``[prompt]`` tables and the precedence of settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evolve.llm.settings import LLMSettings
    from evolve.mutators.llm import LLMMutator
    from evolve.problem import Problem

# Names load on first use: the client pulls in the openai package (most of a second to import), which a run with
# an offline mutator never needs, though the loop imports this package's prompts and settings.
_LAZY = {
    "Budget": "budget", "BudgetExhausted": "budget", "BudgetLimit": "budget", "Usage": "budget",
    "ModelChooser": "choice",
    "CallFailed": "client", "ChatAnswer": "client", "ChatClient": "client", "EndpointDown": "client",
    "FailureKind": "failures", "MalformedAnswer": "failures",
    "AdaptiveLimiter": "limiter",
    "EndpointError": "probe", "ProbeReport": "probe", "probe": "probe",
    "PromptBuilder": "prompts", "PromptSettings": "prompts", "resolve_prompt_settings": "prompts",
    "LLMConfigError": "settings", "LLMSettings": "settings", "ModelSpec": "settings",
    "default_user_config_path": "settings", "resolve_llm_settings": "settings",
}


def build_llm_mutator(settings: LLMSettings, problem: Problem | None = None) -> LLMMutator:
    """An ``LLMMutator`` for ``problem`` (imported lazily: ``evolve.mutators.llm`` imports this package)."""
    from evolve.mutators.llm import build_llm_mutator as build

    return build(settings, problem)


def __getattr__(name: str) -> Any:
    if name == "LLMMutator":
        from evolve.mutators.llm import LLMMutator

        return LLMMutator
    if name in _LAZY:
        return getattr(importlib.import_module(f"evolve.llm.{_LAZY[name]}"), name)
    raise AttributeError(name)


def __dir__() -> list[str]:
    return list(__all__)


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
