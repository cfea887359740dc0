"""The LLM mutator against a real local Chat Completions server: answers real models give, failures, budgets,
ensembles and the bandit."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from evolve.edits import EditMode
from evolve.llm.prompts import PromptBuilder, PromptSettings
from evolve.llm.settings import LLMSettings, ModelSpec
from evolve.mutators.base import (
    ConcurrentMutator,
    LearningMutator,
    MutationOutcome,
    MutationRequest,
    MutatorStopped,
    ProgramView,
)
from evolve.mutators.llm import LLMMutator, build_from_options
from evolve.problem import load_problem
from tests import llm_server as server_lib
from tests.llm_server import ChatServer, Reply, tweak_constant_responder

llm_server = server_lib.llm_server  # the fixture

REPO = Path(__file__).resolve().parents[1]

PROGRAM = '''"""Tiny optimiser."""

# EVOLVE-BLOCK-START
STEP = 0.5


def solve(x):
    return x * STEP
# EVOLVE-BLOCK-END


def main():
    return solve(2.0)
'''
GOOD_DIFF = "Smaller steps.\n<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 0.25\n>>>>>>> REPLACE\n"
FULL_BLOCK = ("```python\n# EVOLVE-BLOCK-START\nSTEP = 0.1\n\n\ndef solve(x):\n    return x * STEP * 2\n"
              "# EVOLVE-BLOCK-END\n```\n")


def settings_for(server: ChatServer, *models: ModelSpec, **overrides) -> LLMSettings:
    base = LLMSettings(models=models or (ModelSpec("fast"),), api_base=server.url, timeout=2.0, retries=2,
                       backoff=0.02, backoff_max=0.1, patience=30.0)
    return replace(base, **overrides)


def make_request(iteration: int = 1, seed: int | None = None, code: str = PROGRAM) -> MutationRequest:
    parent = ProgramView("parent", code, score=1.0, metrics={"score": 1.0})
    return MutationRequest(parent=parent, iteration=iteration, seed=iteration * 7919 if seed is None else seed,
                           description="Tiny test problem.")


@pytest.fixture
def mutator(llm_server: ChatServer):
    m = LLMMutator(settings_for(llm_server))
    yield m
    m.close()


def test_is_a_learning_mutator_with_a_concurrency(mutator: LLMMutator) -> None:
    assert isinstance(mutator, LearningMutator) and isinstance(mutator, ConcurrentMutator)
    assert mutator.max_concurrency == mutator.settings.max_concurrency and mutator.edit_mode is EditMode.DIFF
    assert 1 <= mutator.desired_in_flight() <= mutator.max_concurrency


def test_good_diff(llm_server: ChatServer, mutator: LLMMutator) -> None:
    llm_server.push(Reply(content=GOOD_DIFF, usage=(300, 40)))
    proposal = mutator.propose(make_request())
    assert proposal.child_code == PROGRAM.replace("STEP = 0.5", "STEP = 0.25")
    assert proposal.response == GOOD_DIFF and proposal.mutator == "llm:fast"
    messages = json.loads(proposal.prompt)
    assert [m["role"] for m in messages] == ["system", "user"] and PROGRAM.strip() in messages[1]["content"]
    llm = proposal.llm
    assert (llm["model"], llm["prompt_tokens"], llm["completion_tokens"], llm["tokens"]) == ("fast", 300, 40, 340)
    assert llm["attempts"] == 1 and llm["latency"] > 0 and "edit_error" not in llm and "fallback" not in llm
    assert json.loads(json.dumps(llm)) == llm  # stored as JSON in the archive


def test_fenced_diff(llm_server: ChatServer, mutator: LLMMutator) -> None:
    llm_server.push(f"Here is my change:\n```python\n{GOOD_DIFF}```\nIt should help.")
    assert mutator.propose(make_request()).child_code == PROGRAM.replace("STEP = 0.5", "STEP = 0.25")


def test_whole_file_answer_where_a_diff_was_asked(llm_server: ChatServer, mutator: LLMMutator) -> None:
    whole = PROGRAM.replace("STEP = 0.5", "STEP = 0.3")
    llm_server.push(f"The complete program:\n```python\n{whole}```")
    proposal = mutator.propose(make_request())
    assert proposal.child_code == whole
    assert len(llm_server.requests) == 1  # usable at once: no fallback call


def test_diff_matching_nothing_falls_back_to_a_full_rewrite(llm_server: ChatServer, mutator: LLMMutator) -> None:
    bad = "<<<<<<< SEARCH\nSTEP = 0.7\n=======\nSTEP = 0.2\n>>>>>>> REPLACE"
    llm_server.push(bad, FULL_BLOCK)
    proposal = mutator.propose(make_request())
    assert proposal.child_code is not None and "STEP = 0.1" in proposal.child_code
    assert proposal.child_code.endswith("def main():\n    return solve(2.0)\n")  # outside text kept
    assert proposal.llm["fallback"].startswith("search_not_found")
    assert [c["kind"] for c in proposal.llm["calls"]] == ["edit", "fallback"]
    # The audit trail holds the whole conversation: the first answer and the follow-up.
    messages = json.loads(proposal.prompt)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == bad and "search_not_found" in messages[3]["content"]
    follow_up = llm_server.requests[1]["messages"]
    assert follow_up == messages
    stats = mutator.stats()["models"]["fast"]
    assert stats["fallbacks"] == 1 and stats["fallback_rescued"] == 1 and stats["unusable"] == 0
    assert stats["first_answer_unusable_rate"] == 1.0 and mutator.stats()["totals"]["calls"] == 2


def test_unusable_answers_are_counted_with_their_reasons(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, fallback_full_rewrite=False))
    outside = "<<<<<<< SEARCH\n    return solve(2.0)\n=======\n    return 42\n>>>>>>> REPLACE"
    nothing = "<<<<<<< SEARCH\nSTEP = 0.7\n=======\nSTEP = 0.2\n>>>>>>> REPLACE"
    chat = "I would try a smaller step."
    llm_server.push(outside, nothing, chat, GOOD_DIFF)
    results = [mutator.propose(make_request(i)) for i in range(1, 5)]
    assert [p.child_code is None for p in results] == [True, True, True, False]
    assert results[0].llm["edit_error"].startswith("outside_block")
    assert results[1].llm["edit_error"].startswith("search_not_found")
    assert results[2].llm["edit_error"].startswith("no_edit_found") and results[2].response == chat
    assert results[0].response == outside  # the raw answer is kept for the archive's edit column
    stats = mutator.stats()
    fast = stats["models"]["fast"]
    assert fast["unusable"] == 3 and fast["unusable_rate"] == 0.75 and stats["totals"]["unusable_rate"] == 0.75
    assert fast["unusable_reasons"] == {"outside_block": 1, "search_not_found": 1, "no_edit_found": 1}
    assert len(llm_server.requests) == 4


def test_prose_answer_then_fallback(llm_server: ChatServer, mutator: LLMMutator) -> None:
    llm_server.push("Use a smaller step.", FULL_BLOCK)
    proposal = mutator.propose(make_request())
    assert proposal.child_code is not None and proposal.llm["fallback"].startswith("no_edit_found")


def test_an_empty_answer_is_retried_not_judged(llm_server: ChatServer, mutator: LLMMutator) -> None:
    llm_server.push(Reply(content="", usage=(50, 3)), GOOD_DIFF)
    proposal = mutator.propose(make_request())
    assert proposal.child_code is not None and "fallback" not in proposal.llm
    (call,) = proposal.llm["calls"]
    assert call["attempts"] == 2 and call["failures"][0].startswith("empty_answer")
    # The empty answer was billed (its usage says so): its tokens count, as one call.
    assert mutator.stats()["totals"]["calls"] == 1 and mutator.budget.usage.tokens == llm_server.total_tokens


def test_full_mode_asks_for_rewrites_and_needs_no_fallback(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server), PromptBuilder(PromptSettings(mode=EditMode.FULL)))
    llm_server.push(FULL_BLOCK, "no code at all")
    assert mutator.edit_mode is EditMode.FULL
    assert "STEP = 0.1" in (mutator.propose(make_request(1)).child_code or "")
    second = mutator.propose(make_request(2))
    assert second.child_code is None and "fallback" not in second.llm
    assert "complete new contents" in llm_server.requests[0]["messages"][0]["content"]


def test_failures_are_retried_inside_one_proposal(llm_server: ChatServer, mutator: LLMMutator) -> None:
    llm_server.push(Reply(status=429, headers={"Retry-After": "0.05"}), Reply(status=500), GOOD_DIFF)
    proposal = mutator.propose(make_request())
    assert proposal.child_code is not None and proposal.llm["attempts"] == 3
    assert mutator.stats()["totals"]["retries"] == 2
    assert mutator.stats()["failures"] == {"rate_limited": 1, "server_error": 1}


def test_a_call_without_answer_gives_an_empty_proposal_and_the_run_goes_on(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, retries=1, timeout=0.3))
    llm_server.push(Reply(drop=True), Reply(content="slow", delay=1.0), GOOD_DIFF)
    failed = mutator.propose(make_request(1))
    assert failed.child_code is None and failed.response == ""
    assert "failed 2 times" in failed.llm["error"] and failed.llm["calls"][0]["answered"] is False
    assert mutator.propose(make_request(2)).child_code is not None
    totals = mutator.stats()["totals"]
    assert totals["calls"] == 1 and totals["failed_calls"] == 1  # unanswered calls are not billed


def test_endpoint_down_mid_run_stops_cleanly(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, patience=0.5, retries=50))
    llm_server.push(GOOD_DIFF)
    assert mutator.propose(make_request(1)).child_code is not None
    llm_server.go_down()
    with pytest.raises(MutatorStopped) as info:
        mutator.propose(make_request(2))
    assert llm_server.url in str(info.value) and "patience" in str(info.value)
    with pytest.raises(MutatorStopped):  # later calls stop at once, with the same message
        mutator.propose(make_request(3))
    assert mutator.stats()["stopped"] == str(info.value)


@pytest.mark.parametrize(
    ("limits", "usage", "price", "expected_calls", "flag"),
    [
        ({"max_calls": 3}, (10, 10), 0.0, 3, "--max-llm-calls 3"),
        ({"max_tokens": 300}, (100, 50), 0.0, 2, "--max-tokens 300"),
        ({"max_cost": 1.0}, (250_000, 0), 2.0, 2, "--max-cost 1 USD"),
    ],
)
def test_budget_limits_stop_the_run_and_say_which(llm_server: ChatServer, limits, usage, price, expected_calls,
                                                  flag) -> None:
    model = ModelSpec("fast", price_in=price)
    mutator = LLMMutator(settings_for(llm_server, model, **limits))
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF, usage=usage)
    made = 0
    with pytest.raises(MutatorStopped) as info:
        for i in range(1, 10):
            mutator.propose(make_request(i))
            made += 1
    assert made == expected_calls == len(llm_server.requests)
    assert flag in str(info.value)
    totals = mutator.stats()["totals"]
    assert totals["calls"] == expected_calls
    assert totals["tokens"] == expected_calls * sum(usage) == llm_server.total_tokens
    assert totals["cost"] == pytest.approx(expected_calls * usage[0] * price / 1e6)


def test_call_budget_holds_under_concurrent_calls(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, max_calls=5, max_concurrency=4))
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF, delay=0.05)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(mutator.propose, make_request(i)) for i in range(1, 13)]
    done = [f for f in futures if f.exception() is None]
    stopped = [f for f in futures if isinstance(f.exception(), MutatorStopped)]
    assert len(done) == 5 and len(stopped) == 7
    assert len(llm_server.requests) == 5  # never more than the limit, even with 4 threads


def test_call_budget_counts_fallback_calls(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, max_calls=3))
    bad = "<<<<<<< SEARCH\nSTEP = 0.7\n=======\nSTEP = 0.2\n>>>>>>> REPLACE"
    llm_server.push(bad, FULL_BLOCK, bad, FULL_BLOCK)
    assert mutator.propose(make_request(1)).child_code is not None  # two calls
    second = mutator.propose(make_request(2))  # the third call; no budget left for its fallback
    assert second.child_code is None and second.llm["fallback"] == "skipped: budget reached"
    assert second.llm["edit_error"].startswith("search_not_found")
    with pytest.raises(MutatorStopped, match="--max-llm-calls 3"):
        mutator.propose(make_request(3))
    assert len(llm_server.requests) == 3


def test_budget_restored_from_an_earlier_session(llm_server: ChatServer) -> None:
    first = LLMMutator(settings_for(llm_server, max_calls=3))
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF)
    earlier = [first.propose(make_request(i)).llm for i in (1, 2)]
    resumed = LLMMutator(settings_for(llm_server, max_calls=3))
    resumed.restore(earlier)
    resumed.propose(make_request(3))
    with pytest.raises(MutatorStopped, match="--max-llm-calls 3"):
        resumed.propose(make_request(4))


def test_ensemble_weights_are_honoured(llm_server: ChatServer) -> None:
    models = (ModelSpec("fast", weight=3.0), ModelSpec("strong", weight=1.0))
    mutator = LLMMutator(settings_for(llm_server, *models))
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF, usage=(1, 1))
    chosen = [mutator.propose(make_request(i)).llm["model"] for i in range(1, 401)]
    share = llm_server.calls["fast"] / 400
    assert 0.69 <= share <= 0.81, share
    assert chosen.count("fast") == llm_server.calls["fast"]
    # Same seeds, same choices: the draw depends on the request's seed only.
    again = LLMMutator(settings_for(llm_server, *models))
    assert [again.propose(make_request(i)).llm["model"] for i in range(1, 41)] == chosen[:40]
    # Per-model temperature and max tokens reach the server.
    sent = {r["model"]: (r["temperature"], r["max_tokens"]) for r in llm_server.requests}
    assert sent == {"fast": (0.7, 4096), "strong": (0.7, 4096)}


def _bandit_run(server: ChatServer, bandit: bool, rounds: int = 300) -> tuple[list[str], LLMMutator]:
    """``rounds`` proposals; children of "strong" improve on their parent half the time, those of "fast" 10%."""
    models = (ModelSpec("fast", weight=1.0), ModelSpec("strong", weight=1.0))
    mutator = LLMMutator(settings_for(server, *models, bandit=bandit, bandit_explore=0.1))
    server.responder = lambda body: Reply(content=GOOD_DIFF, usage=(1, 1))
    rng = np.random.default_rng(3)
    chosen = []
    for i in range(1, rounds + 1):
        proposal = mutator.propose(make_request(i))
        model = proposal.llm["model"]
        chosen.append(model)
        improved = rng.random() < (0.5 if model == "strong" else 0.1)
        mutator.observe(proposal, MutationOutcome("ok", 1.0, 1.5 if improved else 0.5))
    return chosen, mutator


def test_bandit_shifts_toward_the_model_whose_children_improve(llm_server: ChatServer) -> None:
    fixed, _ = _bandit_run(llm_server, bandit=False)
    learned, mutator = _bandit_run(llm_server, bandit=True)
    fixed_share = fixed[-150:].count("strong") / 150
    learned_share = learned[-150:].count("strong") / 150
    assert 0.35 < fixed_share < 0.65, fixed_share  # equal weights without the bandit
    assert learned_share > 0.8, learned_share
    bandit = mutator.stats()["bandit"]
    assert bandit["strong"]["improvement_rate_posterior"] > bandit["fast"]["improvement_rate_posterior"]
    assert mutator.stats()["models"]["strong"]["improved"] == bandit["strong"]["improved"]
    # Exploration keeps feeding the weaker model some calls.
    assert learned.count("fast") >= 10


def test_cost_aware_bandit_prefers_the_cheap_model_when_both_improve(llm_server: ChatServer) -> None:
    models = (ModelSpec("cheap", price_in=0.1), ModelSpec("pricey", price_in=10.0))
    llm_server.models = ["cheap", "pricey"]
    mutator = LLMMutator(settings_for(llm_server, *models, bandit=True, bandit_cost_weight=4.0,
                                      bandit_explore=0.05))
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF, usage=(1000, 0))
    rng = np.random.default_rng(5)
    chosen = []
    for i in range(1, 201):
        proposal = mutator.propose(make_request(i))
        chosen.append(proposal.llm["model"])
        improved = rng.random() < 0.3
        mutator.observe(proposal, MutationOutcome("ok", 1.0, 1.5 if improved else 0.5))
    assert chosen[-100:].count("cheap") > 70


def test_observe_ignores_foreign_proposals(mutator: LLMMutator) -> None:
    from evolve.mutators.base import Proposal

    mutator.observe(Proposal(response="x", mutator="tune"), MutationOutcome("ok", 1.0, 2.0))
    assert mutator.stats()["models"]["fast"]["observed"] == 0


def test_concurrent_proposals(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, max_concurrency=3))
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF, delay=0.05)
    with ThreadPoolExecutor(3) as pool:
        proposals = list(pool.map(mutator.propose, [make_request(i) for i in range(1, 10)]))
    assert all(p.child_code for p in proposals)
    assert llm_server.max_in_flight <= 3
    stats = mutator.stats()["totals"]
    assert stats["calls"] == 9 and stats["mean_latency"] >= 0.05


def test_build_from_options_probes_the_endpoint(llm_server: ChatServer, tmp_path: Path) -> None:
    problem = load_problem(REPO / "problems" / "circle_packing")
    options = {"models": ("fast",), "api_base": llm_server.url, "api_key": None, "max_llm_calls": 7,
               "max_tokens": None, "max_cost": None}
    mutator = build_from_options(problem, options, env={}, user_config_path=tmp_path / "none.toml")
    assert mutator.probe_report is not None and mutator.probe_report.checks == {"fast": "listed"}
    assert mutator.budget.max_calls == 7
    with pytest.raises(Exception, match="'nope'"):
        build_from_options(problem, {**options, "models": ("nope",)}, env={}, user_config_path=tmp_path / "n.toml")


def test_improves_circle_packing_through_the_server(llm_server: ChatServer) -> None:
    """The whole path on the shipped problem: prompt with its code, an answer editing a constant, a child."""
    problem = load_problem(REPO / "problems" / "circle_packing")
    from evolve.mutators.llm import build_llm_mutator

    mutator = build_llm_mutator(settings_for(llm_server), problem)
    llm_server.responder = tweak_constant_responder()
    seed_code = problem.seed_code()
    children = {mutator.propose(make_request(i, code=seed_code)).child_code for i in range(1, 7)}
    assert None not in children and len(children) >= 3
    assert all("def run_packing" in c for c in children if c)
