"""The Chat Completions client against a real local server: retries, backoff, timeouts, the patience clock."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from evolve.llm.client import CallFailed, ChatClient, EndpointDown, Failure, FailureKind
from evolve.llm.settings import LLMSettings, ModelSpec
from tests import llm_server as server_lib
from tests.llm_server import ChatServer, Reply

llm_server = server_lib.llm_server  # the fixture

FAST = ModelSpec("fast", max_tokens=64)
MESSAGES = [{"role": "user", "content": "Improve the program."}]


def settings_for(server: ChatServer, **overrides) -> LLMSettings:
    base = LLMSettings(models=(FAST,), api_base=server.url, timeout=2.0, retries=3, backoff=0.05, backoff_max=0.2,
                       patience=30.0)
    return replace(base, **overrides)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_answer_with_usage(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(content="hello", usage=(120, 30)))
    client = ChatClient(settings_for(llm_server))
    answer = client.complete(FAST, MESSAGES, rng, seed=5)
    assert (answer.text, answer.prompt_tokens, answer.completion_tokens) == ("hello", 120, 30)
    assert answer.usage_reported and answer.attempts == 1 and answer.finish_reason == "stop"
    sent = llm_server.requests[-1]
    assert sent["model"] == "fast" and sent["max_tokens"] == 64 and sent["seed"] == 5
    assert sent["messages"] == MESSAGES


def test_missing_usage_is_estimated(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(content="x" * 400, omit_usage=True))
    answer = ChatClient(settings_for(llm_server)).complete(FAST, MESSAGES, rng)
    assert not answer.usage_reported
    assert answer.completion_tokens == 100 and answer.prompt_tokens > 0


def test_seed_not_sent_when_disabled(llm_server: ChatServer, rng) -> None:
    ChatClient(settings_for(llm_server, send_seed=False)).complete(FAST, MESSAGES, rng, seed=5)
    assert "seed" not in llm_server.requests[-1]


def test_429_waits_at_least_retry_after(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(status=429, headers={"Retry-After": "0.6"}), Reply(content="ok"))
    client = ChatClient(settings_for(llm_server, backoff=0.01, backoff_max=5.0))
    answer = client.complete(FAST, MESSAGES, rng)
    assert answer.text == "ok" and answer.attempts == 2
    gap = llm_server.request_times[1] - llm_server.request_times[0]
    assert 0.6 <= gap < 2.0
    assert "rate_limited" in answer.failures[0] and "429" in answer.failures[0]
    assert client.failures["rate_limited"] == 1 and client.retries == 1


def test_retry_after_is_capped_by_backoff_max(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(status=429, headers={"Retry-After": "30"}), Reply(content="ok"))
    started = time.monotonic()
    assert ChatClient(settings_for(llm_server, backoff_max=0.3)).complete(FAST, MESSAGES, rng).text == "ok"
    assert time.monotonic() - started < 3


def test_500_then_success(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(status=500), Reply(status=503), Reply(content="fine"))
    client = ChatClient(settings_for(llm_server))
    answer = client.complete(FAST, MESSAGES, rng)
    assert answer.text == "fine" and answer.attempts == 3
    assert client.failures["server_error"] == 2
    assert client.down_for() == 0.0  # the answer marked the endpoint healthy again


def test_response_slower_than_timeout_is_retried(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(content="late", delay=1.5), Reply(content="quick"))
    client = ChatClient(settings_for(llm_server, timeout=0.4))
    started = time.monotonic()
    answer = client.complete(FAST, MESSAGES, rng)
    assert answer.text == "quick" and answer.attempts == 2
    assert answer.failures[0].startswith("timeout")
    assert time.monotonic() - started < 1.4  # the slow answer was not waited for


def test_dropped_connection_is_retried(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(drop=True), Reply(content="again"))
    answer = ChatClient(settings_for(llm_server)).complete(FAST, MESSAGES, rng)
    assert answer.text == "again" and answer.failures[0].startswith("connection")


def test_retries_exhausted_fail_the_call_only(llm_server: ChatServer, rng) -> None:
    llm_server.push(*[Reply(status=500)] * 3, Reply(content="next call works"))
    client = ChatClient(settings_for(llm_server, retries=2))
    with pytest.raises(CallFailed, match="failed 3 times") as info:
        client.complete(FAST, MESSAGES, rng)
    assert info.value.attempts == 3 and info.value.failure.kind is FailureKind.SERVER_ERROR
    assert client.complete(FAST, MESSAGES, rng).text == "next call works"


def test_bad_request_is_not_retried_nor_counted_as_down(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(status=400, error="prompt too long"), Reply(content="later"))
    client = ChatClient(settings_for(llm_server))
    with pytest.raises(CallFailed, match="prompt too long") as info:
        client.complete(FAST, MESSAGES, rng)
    assert info.value.attempts == 1
    assert client.down_for() == 0.0
    assert llm_server.pending() == 1


def test_a_request_refused_every_time_stops_after_a_few_calls(llm_server: ChatServer, rng) -> None:
    client = ChatClient(settings_for(llm_server))
    llm_server.push(*[Reply(status=400, error="Unsupported parameter: 'seed'")] * 4, Reply(content="one answer"))
    for _ in range(4):
        with pytest.raises(CallFailed):
            client.complete(FAST, MESSAGES, rng)
    assert client.complete(FAST, MESSAGES, rng).text == "one answer"  # an answer: a bad prompt, not bad settings
    llm_server.responder = lambda body: Reply(status=400, error="Unsupported parameter: 'seed'")
    for _ in range(4):
        with pytest.raises(CallFailed):
            client.complete(FAST, MESSAGES, rng)
    with pytest.raises(EndpointDown, match=r"refused the last 5 calls in a row.*Unsupported parameter: 'seed'"):
        client.complete(FAST, MESSAGES, rng)
    assert len(llm_server.requests) == 10


def test_endpoint_down_past_patience_stops(llm_server: ChatServer, rng) -> None:
    client = ChatClient(settings_for(llm_server, patience=0.6, retries=100, backoff=0.05, backoff_max=0.1))
    assert client.complete(FAST, MESSAGES, rng).text
    llm_server.go_down()
    started = time.monotonic()
    with pytest.raises(EndpointDown) as info:
        client.complete(FAST, MESSAGES, rng)
    assert 0.6 <= time.monotonic() - started < 3
    message = str(info.value)
    assert llm_server.url in message and "patience" in message and "--resume" in message
    # Every later call refuses at once while the endpoint stays down.
    with pytest.raises(EndpointDown):
        client.complete(FAST, MESSAGES, rng)


def test_endpoint_back_within_patience_recovers(llm_server: ChatServer, rng) -> None:
    client = ChatClient(settings_for(llm_server, patience=10, retries=100, backoff=0.05, backoff_max=0.1))
    llm_server.go_down()
    timer = threading.Timer(0.5, llm_server.come_up)
    timer.start()
    try:
        answer = client.complete(FAST, MESSAGES, rng)
    finally:
        timer.join()
    assert answer.text and answer.attempts > 2 and client.down_for() == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_patience_counts_a_streak_of_failures_not_a_quiet_spell(llm_server: ChatServer, rng) -> None:
    clock = FakeClock()
    client = ChatClient(settings_for(llm_server, retries=0, patience=10, timeout=5.0), clock=clock)
    llm_server.push(*[Reply(status=502)] * 6)
    with pytest.raises(CallFailed):
        client.complete(FAST, MESSAGES, rng)
    clock.now += 3600  # an hour without calls (evaluations running): not evidence that the endpoint is down
    with pytest.raises(CallFailed):
        client.complete(FAST, MESSAGES, rng)
    assert client.down_for() == 0.0
    for _ in range(2):  # failures 4 s apart: a streak
        clock.now += 4
        with pytest.raises(CallFailed):
            client.complete(FAST, MESSAGES, rng)
    clock.now += 4  # 12 s of continuous failures > patience 10 s
    with pytest.raises(EndpointDown, match="failed every call for 12 s"):
        client.complete(FAST, MESSAGES, rng)


def test_time_since_the_last_good_answer(llm_server: ChatServer, rng) -> None:
    clock = FakeClock()
    client = ChatClient(settings_for(llm_server, retries=0), clock=clock)
    clock.now += 5
    assert client.since_answer() == 5 and not client.stats()["answered_once"]  # counted from the start
    client.complete(FAST, MESSAGES, rng)
    assert client.since_answer() == 0
    llm_server.push(Reply(status=500))
    clock.now += 42
    with pytest.raises(CallFailed):
        client.complete(FAST, MESSAGES, rng)
    stats = client.stats()
    assert stats["since_answer"] == 42 and stats["failed_calls"] == 1 and stats["failed_by_kind"] == {"server_error": 1}


def test_concurrency_cap(llm_server: ChatServer) -> None:
    llm_server.push(*[Reply(content=str(i), delay=0.15) for i in range(6)])
    client = ChatClient(settings_for(llm_server, max_concurrency=2))
    answers: list[str] = []

    def call(i: int) -> None:
        answers.append(client.complete(FAST, MESSAGES, np.random.default_rng(i)).text)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [str(i) for i in range(6)]
    assert llm_server.max_in_flight == 2


def test_close_interrupts_a_waiting_retry(llm_server: ChatServer, rng) -> None:
    llm_server.push(Reply(status=429, headers={"Retry-After": "20"}))
    client = ChatClient(settings_for(llm_server, backoff_max=30))
    threading.Timer(0.3, client.close).start()
    started = time.monotonic()
    with pytest.raises(EndpointDown, match="closed"):
        client.complete(FAST, MESSAGES, rng)
    assert time.monotonic() - started < 5


def test_backoff_is_exponential_with_jitter_and_honours_retry_after() -> None:
    s = LLMSettings(models=(FAST,), backoff=1.0, backoff_max=60.0)
    client = ChatClient(s)
    rng = np.random.default_rng(0)
    plain = Failure(FailureKind.SERVER_ERROR, "x")
    for retry in range(1, 8):
        step = min(60.0, 2.0 ** (retry - 1))
        delays = [client.backoff_delay(retry, plain, rng) for _ in range(50)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 40  # jittered
    limited = Failure(FailureKind.RATE_LIMITED, "x", 429, retry_after=7.0)
    assert all(7.0 <= client.backoff_delay(1, limited, rng) <= 8.0 for _ in range(50))
    huge = Failure(FailureKind.RATE_LIMITED, "x", 429, retry_after=600.0)
    assert client.backoff_delay(1, huge, rng) == 60.0


def test_embeddings_retry_as_chat_calls_do_without_touching_the_chat_health(llm_server: ChatServer, rng) -> None:
    client = ChatClient(settings_for(llm_server, retries=2))
    try:
        vectors, _ = client.embed("fast", ["a b", "c"], rng)
        assert len(vectors) == 2 and len(llm_server.embedding_requests) == 1
        llm_server.embedding_status = 500
        with pytest.raises(CallFailed, match="embeddings from fast failed") as info:
            client.embed("fast", ["a b"], rng)
        assert info.value.attempts == 3 and len(info.value.failures) == 3
        assert len(llm_server.embedding_requests) == 4
        stats = client.stats()
        assert stats["retries"] == 0 and stats["failed_calls"] == 0 and stats["failures"] == {}
        assert client.down_for() == 0.0
    finally:
        client.close()
