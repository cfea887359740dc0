"""One Chat Completions client per mutator: retries with backoff and jitter, a per-call timeout, an adaptive limit on
calls in flight, and a patience clock that declares the endpoint down.

The ``openai`` client's own retries are off (``max_retries=0``): its policy neither counts how long the endpoint has
been failing across calls nor lets a run stop cleanly, so the loop here does it. Retried: 429 (after its Retry-After,
capped at ``backoff_max``), 5xx, 401/403/404 (an endpoint restarting or a model still loading answers these too),
connection errors, timeouts, and 200 answers that are no chat completion (``evolve.llm.failures``: bad JSON, a body
cut short, an HTML page, no choices, an empty answer, wrong shapes). Not retried: other 4xx (400, 413, 422: this
request itself is refused; the next prompt may be fine). Any good answer marks the endpoint healthy; when every
attempt, on every thread, has failed for ``patience`` seconds, calls raise ``EndpointDown`` and the mutator stops
the run. So do ``REFUSALS_BEFORE_DOWN`` calls in a row refused as bad requests with no answer in between: every
request being refused means a setting the endpoint rejects (a ``seed``, ``max_tokens`` or ``temperature`` some
models do not take), not one bad prompt.

Calls in flight follow ``evolve.llm.limiter.AdaptiveLimiter``: from ``start_concurrency`` up to ``max_concurrency``
while answers come back cleanly, down on 429s, 5xx and timeouts.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import openai

from evolve.llm.failures import (
    Completion,
    Failure,
    FailureKind,
    MalformedAnswer,
    classify,
    error_message,
    read_completion,
)
from evolve.llm.limiter import AdaptiveLimiter, LimiterClosed, Signal, Slot
from evolve.llm.settings import KEY_PLACEHOLDER, LLMSettings, ModelSpec

START_CONCURRENCY = 8  # calls in flight at first, unless the settings say otherwise
REFUSALS_BEFORE_DOWN = 5  # calls in a row refused as bad requests, nothing answered: the settings are wrong

_T = TypeVar("_T")

__all__ = ["START_CONCURRENCY", "CallFailed", "ChatAnswer", "ChatClient", "EndpointDown", "Failure", "FailureKind",
           "MalformedAnswer", "classify", "error_message", "estimate_tokens", "make_openai_client",
           "start_concurrency"]


@dataclass(frozen=True)
class ChatAnswer:
    """An answered call."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    usage_reported: bool  # False: the server sent no usage; tokens are estimated (4 characters per token)
    latency: float  # seconds of the answered attempt
    seconds: float  # seconds of the whole call, failed attempts and waits included
    attempts: int
    finish_reason: str
    failures: tuple[str, ...] = ()  # descriptions of the failed attempts before the answer
    wasted: tuple[int, int] = (0, 0)  # (prompt, completion) tokens billed for malformed answers before this one


class CallFailed(RuntimeError):
    """One call got no answer (retries exhausted, or a request the endpoint refuses). The run goes on."""

    def __init__(self, message: str, failure: Failure, attempts: int, seconds: float, failures: tuple[str, ...],
                 wasted: tuple[int, int] = (0, 0)):
        super().__init__(message)
        self.failure = failure
        self.attempts = attempts
        self.seconds = seconds
        self.failures = failures
        self.wasted = wasted  # tokens billed for malformed answers (an empty answer with usage)


class EndpointDown(RuntimeError):
    """The endpoint has failed every call for longer than the configured patience (or the client was closed)."""


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


_tls: Any = None
_tls_lock = threading.Lock()


def tls_context() -> Any:
    """One TLS context per process for every client: openai's default client builds its own, loading the CA bundle
    (~45 ms here, the same work each time), and a run makes two or more; the warm runner makes them on every run.
    Built as the HTTP library under ``openai`` builds its default (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured)."""
    global _tls
    with _tls_lock:
        if _tls is None:
            http = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])
            make = getattr(http, "create_ssl_context", None)  # httpx2 (openai 3) and httpx both have it
            _tls = make() if make is not None else True  # True: the library's own default, built per client
        return _tls


def make_openai_client(settings: LLMSettings, timeout: float | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=settings.api_base,
        api_key=settings.api_key or KEY_PLACEHOLDER,
        timeout=timeout if timeout is not None else settings.timeout,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=tls_context()),
    )


def start_concurrency(settings: LLMSettings) -> int:
    """Calls in flight at first: ``[llm] start_concurrency`` where the settings have it, within the maximum."""
    start = getattr(settings, "start_concurrency", None) or START_CONCURRENCY
    return max(1, min(int(start), settings.max_concurrency))


class ChatClient:
    """Thread-safe wrapper of one ``openai.OpenAI`` client."""

    def __init__(self, settings: LLMSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._client = make_openai_client(settings)
        self._clock = clock
        self.limiter = AdaptiveLimiter(start_concurrency(settings), settings.max_concurrency)
        self._closed = threading.Event()  # set by close(): waits end at once and calls stop
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_failed_at: float | None = None
        self._max_gap = settings.backoff_max + settings.timeout + 1.0  # longest pause within one streak
        self._last_failure: Failure | None = None
        self._started_at = clock()
        self._answered_at: float | None = None
        self.failures: Counter[str] = Counter()  # failed attempts by kind
        self.failed_by_kind: Counter[str] = Counter()  # calls given up, by the kind of their last failure
        self.retries = 0
        self.failed_calls = 0
        self.answered = 0
        self._refusals = 0  # calls refused in a row (bad requests) since the last answer

    # -- health ----------------------------------------------------------------------------------------------------
    def _healthy(self) -> None:
        with self._lock:
            self._down_since = None
            self._last_failed_at = None
            self._answered_at = self._clock()
            self.answered += 1
            self._refusals = 0

    def _failed(self, failure: Failure) -> None:
        with self._lock:
            self.failures[failure.kind.value] += 1
            self._last_failure = failure
            if not failure.kind.retried:
                return
            now = self._clock()
            # A streak of failures proves the endpoint down only while attempts keep coming: after a quiet spell
            # (no calls were made, e.g. while evaluations ran) a new failure starts a new streak.
            quiet = self._last_failed_at is not None and now - self._last_failed_at > self._max_gap
            if self._down_since is None or quiet:
                self._down_since = now
            self._last_failed_at = now

    def down_for(self) -> float:
        """Seconds the current streak of failed attempts has lasted (0 when the last attempt was answered)."""
        with self._lock:
            return 0.0 if self._down_since is None else self._clock() - self._down_since

    def since_answer(self) -> float:
        """Seconds since the last good answer (since the client was made, before the first one)."""
        with self._lock:
            return self._clock() - (self._answered_at if self._answered_at is not None else self._started_at)

    def _check_patience(self) -> None:
        if self._closed.is_set():
            raise EndpointDown("the LLM client was closed")
        down = self.down_for()
        if down >= self.settings.patience:
            last = self._last_failure.describe() if self._last_failure else "unknown"
            raise EndpointDown(
                f"the LLM endpoint {self.settings.api_base} has failed every call for {down:.0f} s "
                f"(patience {self.settings.patience:g} s); last error: {last}. The archive is intact: "
                "resume with `evolve run ... --resume` once the endpoint is back")

    # -- calls -----------------------------------------------------------------------------------------------------
    def backoff_delay(self, retry: int, failure: Failure, rng: np.random.Generator) -> float:
        """Wait before retry number ``retry`` (1-based): exponential with equal jitter, at least the server's
        Retry-After (jittered upward so that waiting threads do not return together), at most ``backoff_max``."""
        s = self.settings
        step = min(s.backoff_max, s.backoff * 2 ** (retry - 1))
        delay = step / 2 + rng.random() * step / 2
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after + rng.random() * min(1.0, 0.1 * failure.retry_after))
        return min(delay, s.backoff_max)

    def _retrying(self, attempt_once: Callable[[int, tuple[str, ...]], _T | Failure], rng: np.random.Generator,
                  give_up: Callable[[Failure, int, tuple[str, ...]], Exception], tracked: bool) -> _T:
        """The retry loop of every call: ``attempt_once(attempt, failures so far)`` until it returns an answer
        rather than a ``Failure``. A failure the policy retries waits ``backoff_delay``; one it does not, or the
        last allowed, raises ``give_up(failure, attempts, failures)``. Only ``tracked`` calls (chat) count towards
        the endpoint's health, its patience and the retry counters."""
        failures: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            result = attempt_once(attempt, tuple(failures))
            if not isinstance(result, Failure):
                return result
            failure = result
            if tracked:
                self._failed(failure)
            failures.append(failure.describe())
            if tracked and failure.kind.retried:
                self._check_patience()  # after an attempt: every call tries at least once
            if not failure.kind.retried or attempt > self.settings.retries:
                raise give_up(failure, attempt, tuple(failures))
            if tracked:
                with self._lock:
                    self.retries += 1
            if self._closed.wait(self.backoff_delay(attempt, failure, rng)):
                raise EndpointDown("the LLM client was closed")

    def complete(
        self,
        model: ModelSpec,
        messages: Sequence[dict[str, str]],
        rng: np.random.Generator,
        seed: int | None = None,
        admit: Callable[[], None] | None = None,
        on_answer: Callable[[ChatAnswer], None] | None = None,
    ) -> ChatAnswer:
        """Ask ``model``; retry per the policy above. Raises ``CallFailed`` or ``EndpointDown``.

        ``admit`` is called once a slot is free, right before each attempt is sent; whatever it raises (a budget
        reached while this call waited) ends the call without sending. ``on_answer`` is called with the answer
        while its slot is still held, so that a call waiting for the slot is admitted against up-to-date totals.
        """
        started = self._clock()
        wasted = [0, 0]

        def attempt_once(attempt: int, failures: tuple[str, ...]) -> ChatAnswer | Failure:
            slot = self._acquire()
            signal = Signal.NEUTRAL
            try:
                if admit is not None:
                    admit()
                t0 = self._clock()
                try:
                    completion = self._send(model, messages, seed)
                except (openai.APIError, OSError, ValueError) as exc:
                    failure = classify(exc)
                    usage = exc.usage if isinstance(exc, MalformedAnswer) else None
                    if usage is not None:
                        wasted[0] += usage[0]
                        wasted[1] += usage[1]
                    if failure.kind.overload:
                        signal = Signal.OVERLOADED
                    return failure
                signal = Signal.ANSWERED
                self._healthy()
                answer = self._answer(model, messages, completion, t0, started, attempt, list(failures), wasted)
                if on_answer is not None:
                    on_answer(answer)
                return answer
            finally:
                self.limiter.release(slot, signal)

        def give_up(failure: Failure, attempts: int, failures: tuple[str, ...]) -> Exception:
            with self._lock:
                self.failed_calls += 1
                self.failed_by_kind[failure.kind.value] += 1
                self._refusals = 0 if failure.kind.retried else self._refusals + 1
                refusals = self._refusals
            if refusals >= REFUSALS_BEFORE_DOWN:
                return EndpointDown(
                    f"the LLM endpoint {self.settings.api_base} refused the last {refusals} calls in a row, answering "
                    f"none; last error: {failure.describe()}. A setting it rejects for model {model.name}? (e.g. "
                    "send_seed = false, a smaller max_tokens, or no temperature for reasoning models)")
            why = "refused" if not failure.kind.retried else f"failed {attempts} times"
            return CallFailed(f"LLM call to {model.name} {why}; last error: {failure.describe()}", failure,
                              attempts, self._clock() - started, failures, (wasted[0], wasted[1]))

        return self._retrying(attempt_once, rng, give_up, tracked=True)

    def embed(self, model: str, texts: Sequence[str], rng: np.random.Generator | None = None,
              ) -> tuple[list[list[float]], int]:
        """Embeddings of ``texts`` through the endpoint's embeddings API: ``(vectors in input order, prompt tokens)``.
        Transient failures are retried as chat calls are (without the adaptive limit, the health and patience
        clock: these calls are small and rare); raises ``CallFailed`` when no usable answer came."""
        started = self._clock()

        def attempt_once(_attempt: int, _failures: tuple[str, ...]) -> tuple[list[list[float]], int] | Failure:
            try:
                response = self._client.embeddings.create(model=model, input=list(texts), encoding_format="float",
                                                          timeout=self.settings.timeout)
                data = sorted(response.data, key=lambda d: d.index)
                vectors = [[float(x) for x in d.embedding] for d in data]
                if len(vectors) != len(texts) or any(not v for v in vectors):
                    raise MalformedAnswer(FailureKind.BAD_SHAPE, f"{len(vectors)} embeddings for {len(texts)} inputs")
            except (openai.APIError, OSError, ValueError) as exc:
                return classify(exc)
            except (TypeError, AttributeError) as exc:
                return Failure(FailureKind.BAD_SHAPE, f"{type(exc).__name__}: {exc}")
            usage = getattr(response, "usage", None)
            return vectors, int(getattr(usage, "prompt_tokens", 0) or 0)

        def give_up(failure: Failure, attempts: int, failures: tuple[str, ...]) -> Exception:
            return CallFailed(f"embeddings from {model} failed; last error: {failure.describe()}", failure, attempts,
                              self._clock() - started, failures)

        return self._retrying(attempt_once, rng if rng is not None else np.random.default_rng(len(texts)), give_up,
                              tracked=False)

    def _acquire(self) -> Slot:
        if self._closed.is_set():
            raise EndpointDown("the LLM client was closed")
        try:
            return self.limiter.acquire()
        except LimiterClosed:
            raise EndpointDown("the LLM client was closed") from None

    def _send(self, model: ModelSpec, messages: Sequence[dict[str, str]], seed: int | None) -> Completion:
        """One HTTP attempt; the body is read and checked here, not by the ``openai`` client (see failures.py)."""
        s = self.settings
        raw = self._client.chat.completions.with_raw_response.create(
            model=model.name,
            messages=list(messages),  # type: ignore[arg-type]
            temperature=model.temperature,
            max_tokens=model.max_tokens,
            seed=seed if (s.send_seed and seed is not None) else openai.omit,
            extra_body=dict(model.extra_body) or None,
            timeout=s.timeout,
        )
        return read_completion(raw.content, raw.headers.get("content-type", ""))

    def _answer(self, model: ModelSpec, messages: Sequence[dict[str, str]], completion: Completion, t0: float,
                started: float, attempt: int, failures: list[str], wasted: list[int]) -> ChatAnswer:
        now = self._clock()
        if completion.usage is not None:
            (prompt_tokens, completion_tokens), reported = completion.usage, True
        else:
            prompt_text = "".join(str(m.get("content", "")) for m in messages)
            prompt_tokens, completion_tokens = estimate_tokens(prompt_text), estimate_tokens(completion.text)
            reported = False
        return ChatAnswer(
            text=completion.text,
            model=model.name,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            usage_reported=reported,
            latency=now - t0,
            seconds=now - started,
            attempts=attempt,
            finish_reason=completion.finish_reason,
            failures=tuple(failures),
            wasted=(wasted[0], wasted[1]),
        )

    def stats(self) -> dict[str, Any]:
        """Counters for the live panel and the run's statistics."""
        since = self.since_answer()
        with self._lock:
            data: dict[str, Any] = {
                "retries": self.retries,
                "failed_calls": self.failed_calls,
                "failed_by_kind": dict(self.failed_by_kind),
                "failures": dict(self.failures),
                "since_answer": since,
                "answered_once": self._answered_at is not None,
            }
        data["concurrency"] = self.limiter.snapshot()
        return data

    def close(self) -> None:
        self._closed.set()
        self.limiter.close()
        self._client.close()
