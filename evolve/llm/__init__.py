"""LLM access for the mutator: settings, the Chat Completions client, prompts, model choice and budgets.

See ``evolve/llm/README.md`` for the ``[llm]`` and ``[prompt]`` tables and the precedence of settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evolve.lazy import lazy_exports

if TYPE_CHECKING:
    from evolve.llm.settings import LLMSettings
    from evolve.mutators.llm import LLMMutator
    from evolve.problem import Problem

# Names load on first use: the client pulls in the openai package (most of a second to import), which a run with
# an offline mutator never needs, though the loop imports this package's prompts and settings. Name -> module, as
# in ``evolve/__init__.py``.
_EXPORTS = {
    **dict.fromkeys(("Budget", "BudgetExhausted", "BudgetLimit", "Usage"), "evolve.llm.budget"),
    "ModelChooser": "evolve.llm.choice",
    **dict.fromkeys(("CallFailed", "ChatAnswer", "ChatClient", "EndpointDown"), "evolve.llm.client"),
    **dict.fromkeys(("FailureKind", "MalformedAnswer"), "evolve.llm.failures"),
    "AdaptiveLimiter": "evolve.llm.limiter",
    **dict.fromkeys(("EndpointError", "ProbeReport", "probe"), "evolve.llm.probe"),
    **dict.fromkeys(("PromptBuilder", "PromptSettings", "resolve_prompt_settings"), "evolve.llm.prompts"),
    **dict.fromkeys(("LLMConfigError", "LLMSettings", "ModelSpec", "default_user_config_path",
                     "resolve_llm_settings"), "evolve.llm.settings"),
    "LLMMutator": "evolve.mutators.llm",  # which imports this package: loaded only when asked for
}
__all__ = sorted([*_EXPORTS, "build_llm_mutator"])


def build_llm_mutator(settings: LLMSettings, problem: Problem | None = None) -> LLMMutator:
    """An ``LLMMutator`` for ``problem`` (imported lazily: ``evolve.mutators.llm`` imports this package)."""
    from evolve.mutators.llm import build_llm_mutator as build

    return build(settings, problem)


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return list(__all__)
