"""The adaptive limit on LLM calls in flight: deterministic rules first, then against the real local server."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pytest

from evolve.llm.client import START_CONCURRENCY, CallFailed, ChatClient, start_concurrency
from evolve.llm.limiter import AdaptiveLimiter, LimiterClosed, Signal
from evolve.llm.settings import LLMSettings, ModelSpec
from tests import llm_server as server_lib
from tests.llm_server import ChatServer, Reply

llm_server = server_lib.llm_server  # the fixture

FAST = ModelSpec("fast", max_tokens=64)
MESSAGES = [{"role": "user", "content": "Improve the program."}]


def round_of(limiter: AdaptiveLimiter, signal: Signal, n: int | None = None) -> None:
    """Send ``n`` attempts at once (default: the whole limit), then answer them all with ``signal``."""
    slots = [limiter.acquire(timeout=1) for _ in range(limiter.limit if n is None else n)]
    for slot in slots:
        limiter.release(slot, signal)


def test_start_is_clamped_to_the_bounds() -> None:
    assert AdaptiveLimiter(50, 32).limit == 32
    assert AdaptiveLimiter(0, 32).limit == 1
    with pytest.raises(ValueError):
        AdaptiveLimiter(4, 0)


def test_clean_rounds_double_the_limit_up_to_the_maximum() -> None:
    limiter = AdaptiveLimiter(2, 20)
    seen = []
    for _ in range(6):
        round_of(limiter, Signal.ANSWERED)
        seen.append(limiter.limit)
    assert seen == [4, 8, 16, 20, 20, 20]


def test_an_idle_limit_does_not_grow() -> None:
    limiter = AdaptiveLimiter(8, 32)
    for _ in range(50):
        round_of(limiter, Signal.ANSWERED, n=3)  # never half the limit in flight: no evidence it could take more
    assert limiter.limit == 8


def test_a_burst_of_overloads_from_one_round_halves_once_and_repeated_rounds_reach_one() -> None:
    limiter = AdaptiveLimiter(16, 32)
    round_of(limiter, Signal.OVERLOADED)  # 16 x 429 sent under the same limit: one signal
    assert limiter.limit == 8
    limits = []
    for _ in range(6):
        round_of(limiter, Signal.OVERLOADED)
        limits.append(limiter.limit)
    assert limits == [4, 2, 1, 1, 1, 1]  # never below 1
    assert limiter.snapshot()["cuts"] >= 5


def test_after_a_cut_growth_is_linear() -> None:
    limiter = AdaptiveLimiter(16, 32)
    round_of(limiter, Signal.OVERLOADED)
    assert limiter.limit == 8
    for _ in range(4):
        round_of(limiter, Signal.ANSWERED)
    assert 10 <= limiter.limit <= 12  # about one more per round, not doubling


def test_neutral_signals_change_nothing() -> None:
    limiter = AdaptiveLimiter(6, 32)
    for _ in range(5):
        round_of(limiter, Signal.NEUTRAL)
    assert limiter.limit == 6


def test_a_full_limiter_blocks_until_a_slot_is_released_and_close_wakes_waiters() -> None:
    limiter = AdaptiveLimiter(1, 4)
    slot = limiter.acquire()
    with pytest.raises(TimeoutError):
        limiter.acquire(timeout=0.05)
    got = []
    waiter = threading.Thread(target=lambda: got.append(limiter.acquire(timeout=5)))
    waiter.start()
    limiter.release(slot, Signal.NEUTRAL)
    waiter.join(5)
    assert len(got) == 1 and limiter.in_flight == 1
    errors = []

    def wait_closed() -> None:
        try:
            limiter.acquire(timeout=5)
        except LimiterClosed as exc:
            errors.append(exc)

    closer = threading.Thread(target=wait_closed)
    closer.start()
    limiter.close()
    closer.join(5)
    assert len(errors) == 1


# -- with the real local server ---------------------------------------------------------------------------------------

def settings_for(server: ChatServer, **overrides) -> LLMSettings:
    base = LLMSettings(models=(FAST,), api_base=server.url, timeout=5.0, retries=8, backoff=0.01, backoff_max=0.05,
                       patience=60.0, max_concurrency=16)
    return replace(base, **overrides)


def call_many(client: ChatClient, n: int, threads: int) -> list[str]:
    def one(i: int) -> str:
        try:
            return client.complete(FAST, MESSAGES, np.random.default_rng(i)).text
        except CallFailed as exc:
            return f"failed: {exc.failure.kind.value}"

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def test_the_start_value_comes_from_the_settings_when_they_have_one() -> None:
    @dataclass(frozen=True)
    class WithStart(LLMSettings):
        start_concurrency: int = 2

    assert start_concurrency(LLMSettings(models=(FAST,), max_concurrency=16)) == min(START_CONCURRENCY, 16)
    assert start_concurrency(LLMSettings(models=(FAST,), max_concurrency=2)) == 2
    assert start_concurrency(WithStart(models=(FAST,), max_concurrency=16)) == 2
    assert start_concurrency(WithStart(models=(FAST,), max_concurrency=16, start_concurrency=40)) == 16


def test_clean_answers_grow_the_calls_in_flight_within_the_maximum(llm_server: ChatServer) -> None:
    llm_server.responder = lambda body: Reply(content="ok", delay=0.05)
    client = ChatClient(settings_for(llm_server))
    assert client.limiter.limit == START_CONCURRENCY
    answers = call_many(client, 96, threads=24)
    assert answers == ["ok"] * 96
    assert START_CONCURRENCY < client.limiter.limit <= 16
    assert START_CONCURRENCY < llm_server.max_in_flight <= 16  # the server never saw more than the maximum


def test_a_429_burst_shrinks_the_calls_in_flight(llm_server: ChatServer) -> None:
    client = ChatClient(settings_for(llm_server))
    client.limiter = AdaptiveLimiter(16, 16)  # as if it had grown already
    lock = threading.Lock()
    seen = {"n": 0}

    def respond(body: dict) -> Reply:
        with lock:
            seen["n"] += 1
            burst = seen["n"] <= 16
        if burst:
            return Reply(status=429, headers={"Retry-After": "0"}, delay=0.02)
        return Reply(content="ok", delay=0.02)

    llm_server.responder = respond
    answers = call_many(client, 16, threads=16)
    assert answers == ["ok"] * 16  # every call got its answer after retries
    assert 1 <= client.limiter.limit <= 10  # halved (at least once), then regrowing linearly
    assert client.stats()["concurrency"]["cuts"] >= 1 and client.failures["rate_limited"] == 16


def test_an_endpoint_failing_every_call_drives_the_limit_to_one_not_below(llm_server: ChatServer) -> None:
    client = ChatClient(settings_for(llm_server, retries=3))
    client.limiter = AdaptiveLimiter(8, 16)
    llm_server.responder = lambda body: Reply(status=503)
    answers = call_many(client, 8, threads=8)
    assert answers == ["failed: server_error"] * 8
    assert client.limiter.limit == 1 and client.limiter.in_flight == 0
    assert client.failed_calls == 8 and client.failed_by_kind == {"server_error": 8}
