"""The LLM mutator: asks a model of the ensemble for an edit of the parent, through any OpenAI-compatible endpoint.

One ``propose`` = one prompt, one answer (plus, when a diff answer cannot be applied, one follow-up asking for a full
rewrite). The mutator applies the answer itself (``evolve.edits.apply_response``) so that it can detect an unusable
answer, retry it as a full rewrite and count unusable answers per model; a usable answer comes back as
``Proposal.child_code``, an unusable one as the raw ``response`` for the loop to record with its rejection reason.

Failures never stop a run: a call that gets no answer after its retries (errors, timeouts, malformed bodies) yields
a proposal marked ``no_answer`` (with the error in ``llm["error"]`` and its reservation given back to the budget),
which the driver asks again or records as an infrastructure failure, never as the child's fault. When the driver asks
again for the same iteration, the calls already made for it are kept in the new proposal's audit. A request the
endpoint refuses outright (400, 413, 422) gives an empty proposal with the error, as an unusable answer would. Only
two things stop the run, by raising ``MutatorStopped``: a budget limit reached, and the endpoint failing every call
for longer than ``patience``.

Thread-safe: the loop calls ``propose`` from up to ``max_concurrency`` threads, and keeps ``desired_in_flight()``
proposals in flight (the client's adaptive limit on calls in flight).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from evolve.edits import EditMode, EditResult, apply_response
from evolve.llm.budget import Budget, BudgetExhausted
from evolve.llm.choice import ModelChooser
from evolve.llm.client import CallFailed, ChatAnswer, ChatClient, EndpointDown
from evolve.llm.failures import FailureKind
from evolve.llm.probe import ProbeReport, probe
from evolve.llm.prompts import PromptBuilder, PromptSettings, messages_json, resolve_prompt_settings
from evolve.llm.settings import LLMSettings, ModelSpec, default_user_config_path, resolve_llm_settings
from evolve.mutators.base import MutationOutcome, MutationRequest, MutatorStopped, Proposal
from evolve.problem import Problem

_SEED_SALT = 0x4C4C4D  # separates this mutator's random stream from other users of the request seed
_MAX_CARRIED = 4096  # iterations whose unanswered calls are kept for the driver's next ask


@dataclass
class _ModelStats:
    proposals: int = 0  # propose() calls that chose this model
    answered: int = 0  # answered calls (fallback follow-ups included)
    failed_calls: int = 0  # calls without an answer after retries
    no_answer: int = 0  # proposals without any answer (handed back to the driver as ``no_answer``)
    answers: int = 0  # proposals that got an answer to judge
    unusable: int = 0  # of those, proposals whose final answer could not be applied
    first_unusable: int = 0  # first answers that could not be applied (before any fallback)
    fallbacks: int = 0
    fallback_rescued: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency: float = 0.0  # summed over answered calls
    observed: int = 0
    improved: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # rejection reasons of unusable final answers

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposals": self.proposals,
            "calls": self.answered,
            "failed_calls": self.failed_calls,
            "no_answer": self.no_answer,
            "answers": self.answers,
            "unusable": self.unusable,
            "unusable_rate": self.unusable / self.answers if self.answers else 0.0,
            "first_answer_unusable_rate": self.first_unusable / self.answers if self.answers else 0.0,
            "fallbacks": self.fallbacks,
            "fallback_rescued": self.fallback_rescued,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "cost": self.cost,
            "mean_latency": self.latency / self.answered if self.answered else 0.0,
            "observed": self.observed,
            "improved": self.improved,
            "improvement_rate": self.improved / self.observed if self.observed else 0.0,
            "outcomes": dict(self.outcomes),
            "unusable_reasons": dict(self.reasons),
        }


@dataclass(frozen=True)
class MetaAnswer:
    """The answer to a call that is not a mutation (``LLMMutator.meta_call``)."""

    text: str | None  # None: no answer (the endpoint failed every retry, or refused the request)
    model: str
    calls: tuple[dict[str, Any], ...]  # the audit, as in a child's ``llm["calls"]``: budgets count it on resume


class LLMMutator:
    """``Mutator`` + ``LearningMutator`` over an OpenAI-compatible endpoint."""

    name = "llm"
    kinds = ("diff", "full", "crossover")  # what the search may ask of it (evolve.search)
    observes_not_novel = True  # a model whose children are near-copies did not improve anything

    def __init__(self, settings: LLMSettings, prompts: PromptBuilder | None = None,
                 client: ChatClient | None = None):
        self.settings = settings
        self.prompts = prompts or PromptBuilder()
        self.client = client or ChatClient(settings)
        self.max_concurrency = settings.max_concurrency
        self.edit_mode: EditMode = self.prompts.mode
        self.chooser = ModelChooser(settings.models, settings.bandit, settings.bandit_cost_weight,
                                    settings.bandit_explore)
        self.budget = Budget(settings.max_calls, settings.max_tokens, settings.max_cost)
        self.notes = settings.notes
        self._lock = threading.Lock()
        self._models = {m.name: _ModelStats() for m in settings.models}
        self._stopped: str | None = None
        self._carried: dict[int, list[dict[str, Any]]] = {}  # iteration -> its unanswered calls so far
        self._meta: Counter[str] = Counter()  # calls that were not mutations, by kind (evolve.search)
        self._embeddings: Counter[str] = Counter()
        self.probe_report: ProbeReport | None = None  # set by build_from_options after the start-up check

    # -- Mutator ---------------------------------------------------------------------------------------------------
    def propose(self, request: MutationRequest) -> Proposal:
        if self._stopped is not None:
            raise MutatorStopped(self._stopped)
        rng = np.random.default_rng([request.seed % 2**63, _SEED_SALT])
        spec = self.chooser.choose(rng)
        with self._lock:
            self._models[spec.name].proposals += 1
        messages = self.prompts.messages(request)
        with self._lock:
            calls = self._carried.pop(request.iteration, [])
        answer = self._ask(spec, messages, rng, request.seed, "edit", calls)
        if answer is None:
            return self._unanswered(spec, messages, calls, request.iteration)
        parent_code = request.parent.code
        mode = self.prompts.mode_for(request)
        result = apply_response(parent_code, answer.text, mode)
        first_error = result.error
        final_messages, final_text = messages, answer.text
        fallback = ""
        if not result.ok and mode is EditMode.DIFF and self.settings.fallback_full_rewrite:
            follow_up = self.prompts.fallback(messages, answer.text, first_error, request.language)
            try:
                self.budget.reserve()
            except BudgetExhausted:
                fallback = "skipped: budget reached"
            else:
                fallback = first_error
                try:
                    second = self._ask(spec, follow_up, rng, request.seed, "fallback", calls, reserved=True)
                except MutatorStopped:
                    second = None  # keep this answer for the archive; the next propose() stops the run
                if second is not None:
                    final_messages, final_text = follow_up, second.text
                    result = apply_response(parent_code, second.text, EditMode.FULL)
        with self._lock:
            stats = self._models[spec.name]
            stats.answers += 1
            stats.first_unusable += bool(first_error)
            if fallback and not fallback.startswith("skipped"):
                stats.fallbacks += 1
                stats.fallback_rescued += result.ok
            if not result.ok:
                stats.unusable += 1
                stats.reasons[result.reason.value if result.reason else "unknown"] += 1
        return self._proposal(spec, final_messages, final_text, calls, result, fallback, mode)

    def meta_call(self, messages: list[dict[str, str]], seed: int, kind: str) -> MetaAnswer:
        """One call that is not a mutation (a new search strategy, the scratchpad, a novelty judgement), with the
        same model choice, budgets and audit as an edit. ``text`` is None when the call got no answer; raises
        ``MutatorStopped`` when a budget is reached or the endpoint is down."""
        if self._stopped is not None:
            raise MutatorStopped(self._stopped)
        rng = np.random.default_rng([seed % 2**63, _SEED_SALT])
        spec = self.chooser.choose(rng)
        calls: list[dict[str, Any]] = []
        answer = self._ask(spec, messages, rng, seed, kind, calls)
        with self._lock:
            self._meta[kind] += 1
        return MetaAnswer(answer.text if answer is not None else None, spec.name, tuple(calls))

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embeddings of ``texts`` from the endpoint's embeddings API (novelty by embedding similarity)."""
        vectors, tokens = self.client.embed(model, texts)
        with self._lock:
            self._embeddings["calls"] += 1
            self._embeddings["inputs"] += len(texts)
            self._embeddings["tokens"] += tokens
        return vectors

    def _ask(self, spec: ModelSpec, messages: list[dict[str, str]], rng: np.random.Generator, seed: int,
             kind: str, calls: list[dict[str, Any]], reserved: bool = False) -> ChatAnswer | None:
        """One call with budget accounting; ``None`` when it got no answer. Raises ``MutatorStopped``.

        The call's reservation is given back whenever no answer is billed, however the call ends."""
        if not reserved:
            try:
                self.budget.reserve()
            except BudgetExhausted as exc:
                raise self._stop(str(exc)) from None
        try:
            answer = self.client.complete(spec, messages, rng, seed=seed % 2**31, admit=self.budget.check_spend,
                                          on_answer=lambda a: self._account(spec, a))
        except BudgetExhausted as exc:  # a token or cost limit reached while this call waited for a slot
            self.budget.release(sent=False)
            raise self._stop(str(exc)) from None
        except EndpointDown as exc:
            self.budget.release()
            raise self._stop(str(exc)) from None
        except CallFailed as exc:
            self.budget.release()
            wasted_cost = spec.cost(*exc.wasted)
            self.budget.spend(*exc.wasted, wasted_cost)
            with self._lock:
                stats = self._models[spec.name]
                stats.failed_calls += 1
                stats.prompt_tokens += exc.wasted[0]
                stats.completion_tokens += exc.wasted[1]
                stats.cost += wasted_cost
            calls.append({"kind": kind, "answered": False, "error": str(exc), "failure": exc.failure.kind.value,
                          "attempts": exc.attempts, "seconds": exc.seconds, "failures": list(exc.failures),
                          "prompt_tokens": exc.wasted[0], "completion_tokens": exc.wasted[1], "cost": wasted_cost})
            return None
        except BaseException:
            self.budget.release()
            raise
        prompt_tokens, completion_tokens = _billed(answer)
        calls.append({
            "kind": kind, "answered": True, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "usage_reported": answer.usage_reported,
            "cost": spec.cost(prompt_tokens, completion_tokens), "latency": answer.latency,
            "seconds": answer.seconds, "attempts": answer.attempts, "finish_reason": answer.finish_reason,
            "failures": list(answer.failures),
        })
        return answer

    def _account(self, spec: ModelSpec, answer: ChatAnswer) -> None:
        """Bill an answer (its reservation becomes a call), before its slot goes to a waiting call."""
        prompt_tokens, completion_tokens = _billed(answer)
        cost = spec.cost(prompt_tokens, completion_tokens)
        self.budget.record(prompt_tokens, completion_tokens, cost)
        self.chooser.cost(spec.name, cost)
        with self._lock:
            stats = self._models[spec.name]
            stats.answered += 1
            stats.prompt_tokens += prompt_tokens
            stats.completion_tokens += completion_tokens
            stats.cost += cost
            stats.latency += answer.latency

    def _unanswered(self, spec: ModelSpec, messages: list[dict[str, str]], calls: list[dict[str, Any]],
                    iteration: int) -> Proposal:
        """The proposal for a request that got no answer: ``no_answer`` when the endpoint failed every retry (the
        driver may ask again: these calls are kept for that), an empty one when it refused the request itself."""
        proposal = self._proposal(spec, messages, "", calls, None, "")
        if calls[-1].get("failure") == FailureKind.BAD_REQUEST.value:
            return proposal
        with self._lock:
            self._models[spec.name].no_answer += 1
            self._carried[iteration] = calls
            while len(self._carried) > _MAX_CARRIED:
                del self._carried[next(iter(self._carried))]
        return replace(proposal, no_answer=str(calls[-1]["error"]))

    def _stop(self, message: str) -> MutatorStopped:
        with self._lock:
            if self._stopped is None:
                self._stopped = message
            return MutatorStopped(self._stopped)

    def _proposal(self, spec: ModelSpec, messages: list[dict[str, str]], text: str, calls: list[dict[str, Any]],
                  result: EditResult | None, fallback: str, mode: EditMode | None = None) -> Proposal:
        answered = [c for c in calls if c["answered"]]
        llm: dict[str, Any] = {
            "model": spec.name,
            "mode": (mode or self.edit_mode).value,
            "prompt_tokens": sum(c.get("prompt_tokens", 0) for c in calls),
            "completion_tokens": sum(c.get("completion_tokens", 0) for c in calls),
            "cost": sum(c.get("cost", 0.0) for c in calls),
            "latency": sum(c["latency"] for c in answered),
            "attempts": sum(c["attempts"] for c in calls),
            "usage_reported": all(c["usage_reported"] for c in answered) if answered else False,
            "calls": calls,
        }
        llm["tokens"] = llm["prompt_tokens"] + llm["completion_tokens"]
        if fallback:
            llm["fallback"] = fallback
        edit_error = result.error if result is not None else ""
        if edit_error:
            llm["edit_error"] = edit_error
        failed = [c for c in calls if not c["answered"]]
        if failed and not answered:
            llm["error"] = failed[-1]["error"]
        child = result.child if result is not None and result.ok else None
        return Proposal(response=text, mutator=f"llm:{spec.name}", prompt=messages_json(messages), llm=llm,
                        child_code=child, edit_error=edit_error)

    # -- LearningMutator -------------------------------------------------------------------------------------------
    def observe(self, proposal: Proposal, outcome: MutationOutcome) -> None:
        model = proposal.llm.get("model") if isinstance(proposal.llm, dict) else None
        if model not in self._models:
            return
        if not proposal.no_answer:  # the model never answered: no evidence about its children
            self.chooser.update(model, outcome.improved)
        with self._lock:
            stats = self._models[model]
            stats.observed += 1
            stats.improved += outcome.improved
            stats.outcomes[outcome.status] += 1

    def desired_in_flight(self) -> int:
        """Proposals the driver should keep in flight: the calls the endpoint accepts now (adaptive)."""
        return self.client.limiter.limit

    def stats(self) -> dict[str, Any]:
        usage = self.budget.usage
        client = self.client.stats()
        with self._lock:
            models = {name: s.to_dict() for name, s in self._models.items()}
            stopped = self._stopped
        answers = sum(m["answers"] for m in models.values())
        unusable = sum(m["unusable"] for m in models.values())
        answered = sum(m["calls"] for m in models.values())
        latency = sum(m["mean_latency"] * m["calls"] for m in models.values())
        concurrency = client["concurrency"]
        totals = {
            "calls": usage.calls,
            "failed_calls": sum(m["failed_calls"] for m in models.values()),
            "failed_by_kind": client["failed_by_kind"],
            "no_answer": sum(m["no_answer"] for m in models.values()),
            "retries": client["retries"],
            "since_answer": client["since_answer"],
            "in_flight": concurrency["in_flight"],
            "limit": concurrency["limit"],
            "max_concurrency": concurrency["max"],
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "tokens": usage.tokens,
            "cost": usage.cost,
            "unusable_rate": unusable / answers if answers else 0.0,
            "fallbacks": sum(m["fallbacks"] for m in models.values()),
            "mean_latency": latency / answered if answered else 0.0,
        }
        data: dict[str, Any] = {
            "endpoint": self.settings.api_base,
            "totals": totals,
            "models": models,
            "failures": client["failures"],
            "concurrency": concurrency,
            "limits": self.budget.limits(),
            "stopped": stopped,
        }
        if self.settings.bandit:
            data["bandit"] = self.chooser.snapshot()
        with self._lock:
            if self._meta:
                data["meta_calls"] = dict(self._meta)
            if self._embeddings:
                data["embeddings"] = dict(self._embeddings)
        return data

    def restore(self, llm_records: Iterable[Mapping[str, Any]]) -> None:
        """Count an earlier session's calls (the archive's ``llm`` dicts) against the budgets, on ``--resume``."""
        self.budget.restore(dict(r) for r in llm_records)

    def close(self) -> None:
        self.client.close()


def _billed(answer: ChatAnswer) -> tuple[int, int]:
    """The tokens of a whole call: its answer plus malformed answers before it that the server billed."""
    return answer.prompt_tokens + answer.wasted[0], answer.completion_tokens + answer.wasted[1]


def build_llm_mutator(settings: LLMSettings, problem: Problem | None = None) -> LLMMutator:
    """An ``LLMMutator`` for ``problem`` (its ``[prompt]`` table, template overrides and language)."""
    if problem is None:
        return LLMMutator(settings)
    prompt_settings: PromptSettings = resolve_prompt_settings(problem.sections.get("prompt"), problem.root)
    return LLMMutator(settings, PromptBuilder(prompt_settings, problem.language))


def build_from_options(problem: Problem, options: Mapping[str, Any], env: Mapping[str, str] | None = None,
                       user_config_path: Path | None = None, check_endpoint: bool = True) -> LLMMutator:
    """What ``evolve run --mutator llm`` calls: resolve the settings (CLI options, environment, user config,
    problem), validate the prompt settings, probe the endpoint and every model, then build the mutator.

    Raises ``LLMConfigError`` or ``EndpointError`` with a message for the user.
    """
    env = os.environ if env is None else env
    path = user_config_path if user_config_path is not None else default_user_config_path(env)
    settings = resolve_llm_settings(problem.sections.get("llm"), path, options, env)
    mutator = build_llm_mutator(settings, problem)
    if check_endpoint:
        mutator.probe_report = probe(settings)
    return mutator
