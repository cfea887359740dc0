"""Malformed answers from the endpoint (HTTP 200, no usable chat completion) against the real local server: retried,
counted by kind, given back to the budget, counted toward patience, and never turned into a child's fault."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from evolve.llm.budget import Budget
from evolve.llm.client import ChatClient
from evolve.llm.failures import FailureKind, MalformedAnswer, read_completion
from evolve.llm.probe import EndpointError, probe
from evolve.llm.settings import LLMSettings, ModelSpec
from evolve.mutators.base import MutationRequest, MutatorStopped, ProgramView
from evolve.mutators.llm import LLMMutator
from evolve.progress import llm_summary_lines
from tests import llm_server as server_lib
from tests.llm_server import MALFORMED, ChatServer, Reply, garbage_responder

llm_server = server_lib.llm_server  # the fixture

FAST = ModelSpec("fast", max_tokens=64)
MESSAGES = [{"role": "user", "content": "Improve the program."}]
PROGRAM = "# EVOLVE-BLOCK-START\nSTEP = 0.5\n# EVOLVE-BLOCK-END\n"
GOOD_DIFF = "<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 0.25\n>>>>>>> REPLACE\n"

EXPECTED_KIND = {
    "not_json": "bad_json",
    "cut_json": "bad_json",
    "truncated": "truncated",
    "html": "wrong_content_type",
    "no_choices": "no_choices",
    "missing_choices": "no_choices",
    "empty_content": "empty_answer",
    "null_content": "empty_answer",
    "choices_not_a_list": "bad_shape",
    "content_not_text": "bad_shape",
    "json_list": "bad_shape",
    "error_in_200": "server_error",
}
UNBILLED = tuple(k for k in MALFORMED if k not in ("empty_content", "null_content"))  # the server bills no tokens


def settings_for(server: ChatServer, **overrides) -> LLMSettings:
    base = LLMSettings(models=(FAST,), api_base=server.url, timeout=3.0, retries=2, backoff=0.01, backoff_max=0.05,
                       patience=60.0)
    return replace(base, **overrides)


def request(iteration: int = 1) -> MutationRequest:
    parent = ProgramView("parent", PROGRAM, score=1.0, metrics={"score": 1.0})
    return MutationRequest(parent=parent, iteration=iteration, seed=iteration * 7919)


def test_every_malformed_kind_is_known() -> None:
    assert set(EXPECTED_KIND) == set(MALFORMED)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_answer_is_classified_and_retried(llm_server: ChatServer, name: str) -> None:
    llm_server.push(MALFORMED[name], Reply(content="fine"))
    client = ChatClient(settings_for(llm_server))
    answer = client.complete(FAST, MESSAGES, np.random.default_rng(0))
    kind = EXPECTED_KIND[name]
    assert answer.text == "fine" and answer.attempts == 2
    assert answer.failures[0].startswith(kind)
    assert client.failures == {kind: 1} and client.retries == 1 and client.failed_calls == 0
    assert client.down_for() == 0.0


def test_reading_a_body_accepts_what_real_servers_send_and_names_what_is_wrong() -> None:
    ok = {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                       "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    completion = read_completion(json.dumps(ok).encode(), "text/plain")  # JSON under a wrong label is still JSON
    assert (completion.text, completion.finish_reason, completion.usage) == ("ab", "length", (3, 2))
    with pytest.raises(MalformedAnswer) as info:
        read_completion(b"<html>" + b"x" * 500, "text/html; charset=utf-8")
    assert info.value.failure.kind is FailureKind.WRONG_CONTENT_TYPE
    assert "text/html" in str(info.value) and "506 bytes" in str(info.value) and "..." in str(info.value)
    empty = {"choices": [{"message": {"content": "", "refusal": "I cannot help"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 9, "completion_tokens": 1}}
    with pytest.raises(MalformedAnswer) as info:
        read_completion(json.dumps(empty).encode(), "application/json")
    assert info.value.usage == (9, 1) and "I cannot help" in str(info.value)


def test_an_always_garbage_endpoint_gives_no_answer_releases_the_budget_and_counts_by_kind(
        llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, max_calls=3))
    llm_server.responder = garbage_responder(kinds=UNBILLED)
    proposals = [mutator.propose(request(i)) for i in range(1, 6)]
    for proposal in proposals:
        assert proposal.no_answer and proposal.child_code is None and proposal.response == ""
        assert proposal.no_answer == proposal.llm["error"] and "failed 3 times" in proposal.no_answer
        assert json.loads(proposal.prompt)[-1]["role"] == "user"  # the prompt is kept for the archive
    assert len(llm_server.requests) == 15 == llm_server.malformed
    assert mutator.budget.reserved == 0 and mutator.budget.unanswered == 5
    totals = mutator.stats()["totals"]
    assert totals["calls"] == 0 and totals["failed_calls"] == 5 and totals["no_answer"] == 5
    assert totals["retries"] == 10 and sum(totals["failed_by_kind"].values()) == 5
    assert sum(mutator.stats()["failures"].values()) == 15  # every attempt, by kind
    assert totals["tokens"] == 0  # nothing was billed
    summary = "\n".join(llm_summary_lines(mutator.stats()))
    assert "llm: 0 calls" in summary and "  failures: 5 failed calls (" in summary and "10 retries" in summary
    assert "5 proposals without answer" in summary and "last good answer" in summary
    assert "calls in flight: limit" in summary
    # The call budget was never consumed by calls without an answer: three good calls still fit in it.
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF)
    assert all(mutator.propose(request(i)).child_code for i in range(6, 9))
    with pytest.raises(MutatorStopped, match=r"--max-llm-calls 3 \(3 calls answered; 5 calls without an answer"):
        mutator.propose(request(9))
    assert len(llm_server.requests) == 18


def test_an_always_garbage_endpoint_stops_the_run_after_its_patience(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, patience=0.5, retries=1000))
    llm_server.responder = garbage_responder(kinds=("html",))
    with pytest.raises(MutatorStopped) as info:
        mutator.propose(request())
    message = str(info.value)
    assert llm_server.url in message and "patience" in message and "wrong_content_type" in message
    assert "--resume" in message
    with pytest.raises(MutatorStopped):
        mutator.propose(request(2))
    assert mutator.budget.reserved == 0 and mutator.stats()["stopped"] == message
    assert mutator.stats()["totals"]["since_answer"] >= 0.5


def test_garbage_on_every_third_call_costs_retries_only(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server))
    llm_server.responder = garbage_responder(every=3, kinds=UNBILLED, good=lambda body: Reply(content=GOOD_DIFF))
    proposals = [mutator.propose(request(i)) for i in range(1, 31)]
    assert all(p.child_code and not p.no_answer for p in proposals)
    totals = mutator.stats()["totals"]
    assert llm_server.malformed == totals["retries"] == 14  # calls 3, 6, ..., 42 of 44
    assert totals["calls"] == 30 == sum(llm_server.answered.values()) and totals["failed_calls"] == 0
    assert totals["tokens"] == llm_server.total_tokens
    assert sum(p.llm["attempts"] for p in proposals) == len(llm_server.requests) == 44


def test_billed_empty_answers_count_against_the_token_budget_and_survive_a_resume(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, retries=1))
    llm_server.responder = lambda body: Reply(content="", usage=(100, 7))
    proposal = mutator.propose(request())
    assert proposal.no_answer and proposal.llm["prompt_tokens"] == 200 and proposal.llm["completion_tokens"] == 14
    assert mutator.budget.usage.tokens == 214 == llm_server.total_tokens and mutator.budget.usage.calls == 0
    resumed = Budget()
    resumed.restore([proposal.llm])
    assert resumed.usage.tokens == 214 and resumed.usage.calls == 0


def test_asking_again_for_the_same_iteration_keeps_the_calls_already_made(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, retries=0))
    llm_server.push(MALFORMED["not_json"], GOOD_DIFF)
    first = mutator.propose(request(7))
    assert first.no_answer and len(first.llm["calls"]) == 1
    again = mutator.propose(request(7))
    assert again.child_code and not again.no_answer
    assert [c["answered"] for c in again.llm["calls"]] == [False, True] and again.llm["attempts"] == 2
    assert "error" not in again.llm


def test_a_token_limit_reached_while_a_call_waits_for_its_slot_stops_it_unsent(llm_server: ChatServer) -> None:
    mutator = LLMMutator(settings_for(llm_server, max_concurrency=1, max_tokens=100))
    llm_server.responder = lambda body: Reply(content=GOOD_DIFF, usage=(90, 20), delay=0.3)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(mutator.propose, request(i)) for i in (1, 2)]
    outcomes = sorted(type(f.exception()).__name__ if f.exception() else "ok" for f in futures)
    assert outcomes == ["MutatorStopped", "ok"]
    assert len(llm_server.requests) == 1  # the second call had reserved, but was never sent
    assert mutator.budget.reserved == 0 and mutator.budget.usage.tokens == 110


def test_the_probe_treats_a_garbage_model_list_as_none_and_refuses_garbage_completions(
        llm_server: ChatServer) -> None:
    settings = settings_for(llm_server)
    llm_server.models_reply = MALFORMED["not_json"]
    report = probe(settings)
    assert report.listed is None and report.checks == {"fast": "answered"}
    llm_server.push(MALFORMED["empty_content"])  # a one-token answer may well be empty
    assert probe(settings).checks == {"fast": "answered"}
    llm_server.responder = lambda body: MALFORMED["html"]
    with pytest.raises(EndpointError) as info:
        probe(settings)
    message = str(info.value)
    assert llm_server.url in message and "'fast'" in message and "wrong_content_type" in message
