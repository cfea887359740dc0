"""One Chat Completions client per mutator: retries with backoff and jitter, a per-call timeout, a concurrency cap,
and a patience clock that declares the endpoint down.

The ``openai`` client's own retries are off (``max_retries=0``): its policy neither counts how long the endpoint has
been failing across calls nor lets a run stop cleanly, so the loop here does it. Retried: 429 (after its Retry-After,
capped at ``backoff_max``), 5xx, 401/403/404 (an endpoint restarting or a model still loading answers these too),
connection errors and timeouts. Not retried: other 4xx (400, 413, 422: this request itself is refused; the next
prompt may be fine). Any answered call marks the endpoint healthy; when every attempt, on every thread, has failed
for ``patience`` seconds, calls raise ``EndpointDown`` and the mutator stops the run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import openai

from evolve.llm.settings import KEY_PLACEHOLDER, LLMSettings, ModelSpec


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    REFUSED = "refused"  # 401/403/404: key, permission or model not (yet) available
    BAD_REQUEST = "bad_request"  # other 4xx: this request is refused; not retried
    CONNECTION = "connection"  # refused, reset or dropped connection
    TIMEOUT = "timeout"  # no answer within the per-call timeout


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        code = f"HTTP {self.status} " if self.status else ""
        return f"{self.kind.value}: {code}{self.message}".strip()


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


class CallFailed(RuntimeError):
    """One call got no answer (retries exhausted, or a request the endpoint refuses). The run goes on."""

    def __init__(self, message: str, failure: Failure, attempts: int, seconds: float, failures: tuple[str, ...]):
        super().__init__(message)
        self.failure = failure
        self.attempts = attempts
        self.seconds = seconds
        self.failures = failures


class EndpointDown(RuntimeError):
    """The endpoint has failed every call for longer than the configured patience (or the client was closed)."""


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def classify(exc: Exception) -> Failure:
    """Turn an ``openai`` exception into a ``Failure``."""
    if isinstance(exc, openai.APITimeoutError):
        return Failure(FailureKind.TIMEOUT, "no answer within the timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return Failure(FailureKind.CONNECTION, f"{exc}{f' ({cause})' if cause else ''}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = error_message(exc)
        if status == 429:
            return Failure(FailureKind.RATE_LIMITED, message, status, _retry_after(exc.response.headers))
        if status >= 500:
            return Failure(FailureKind.SERVER_ERROR, message, status, _retry_after(exc.response.headers))
        if status == 408:
            return Failure(FailureKind.TIMEOUT, message, status)
        if status in (401, 403, 404):
            return Failure(FailureKind.REFUSED, message, status)
        return Failure(FailureKind.BAD_REQUEST, message, status)
    return Failure(FailureKind.CONNECTION, f"{type(exc).__name__}: {exc}")


def error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    text = ""
    with contextlib.suppress(Exception):  # a streamed or closed body has no text
        text = exc.response.text
    return (text or str(exc))[:500]


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds; HTTP dates are rare from model servers)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0 and np.isfinite(seconds):
            return seconds
    return None


def make_openai_client(settings: LLMSettings, timeout: float | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=settings.api_base,
        api_key=settings.api_key or KEY_PLACEHOLDER,
        timeout=timeout if timeout is not None else settings.timeout,
        max_retries=0,
    )


class ChatClient:
    """Thread-safe wrapper of one ``openai.OpenAI`` client."""

    def __init__(self, settings: LLMSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._client = make_openai_client(settings)
        self._clock = clock
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._closed = threading.Event()  # set by close(): waits end at once and calls stop
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_failed_at: float | None = None
        self._max_gap = settings.backoff_max + settings.timeout + 1.0  # longest pause within one streak
        self._last_failure: Failure | None = None
        self.failures: Counter[str] = Counter()  # failed attempts by kind
        self.retries = 0
        self.failed_calls = 0

    # -- health ----------------------------------------------------------------------------------------------------
    def _healthy(self) -> None:
        with self._lock:
            self._down_since = None
            self._last_failed_at = None

    def _failed(self, failure: Failure) -> None:
        with self._lock:
            self.failures[failure.kind.value] += 1
            self._last_failure = failure
            if failure.kind is FailureKind.BAD_REQUEST:
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

    def complete(
        self,
        model: ModelSpec,
        messages: Sequence[dict[str, str]],
        rng: np.random.Generator,
        seed: int | None = None,
    ) -> ChatAnswer:
        """Ask ``model``; retry per the policy above. Raises ``CallFailed`` or ``EndpointDown``."""
        s = self.settings
        started = self._clock()
        failures: list[str] = []
        attempt = 0
        while True:
            if self._closed.is_set():
                raise EndpointDown("the LLM client was closed")
            attempt += 1
            with self._slots:
                t0 = self._clock()
                try:
                    response = self._client.chat.completions.create(
                        model=model.name,
                        messages=list(messages),  # type: ignore[arg-type]
                        temperature=model.temperature,
                        max_tokens=model.max_tokens,
                        seed=seed if (s.send_seed and seed is not None) else openai.omit,
                        extra_body=dict(model.extra_body) or None,
                        timeout=s.timeout,
                    )
                except (openai.APIError, OSError) as exc:
                    failure = classify(exc)
                else:
                    self._healthy()
                    return self._answer(model, messages, response, t0, started, attempt, failures)
            self._failed(failure)
            failures.append(failure.describe())
            if failure.kind is not FailureKind.BAD_REQUEST:
                self._check_patience()  # after an attempt: every call tries at least once
            if failure.kind is FailureKind.BAD_REQUEST or attempt > s.retries:
                with self._lock:
                    self.failed_calls += 1
                why = "refused" if failure.kind is FailureKind.BAD_REQUEST else f"failed {attempt} times"
                raise CallFailed(f"LLM call to {model.name} {why}; last error: {failure.describe()}", failure,
                                 attempt, self._clock() - started, tuple(failures))
            with self._lock:
                self.retries += 1
            if self._closed.wait(self.backoff_delay(attempt, failure, rng)):
                raise EndpointDown("the LLM client was closed")

    def _answer(self, model: ModelSpec, messages: Sequence[dict[str, str]], response: Any, t0: float,
                started: float, attempt: int, failures: list[str]) -> ChatAnswer:
        now = self._clock()
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
        usage = response.usage
        if usage is not None and usage.prompt_tokens is not None:
            prompt_tokens, completion_tokens, reported = int(usage.prompt_tokens), int(usage.completion_tokens or 0), True
        else:
            prompt_text = "".join(str(m.get("content", "")) for m in messages)
            prompt_tokens, completion_tokens, reported = estimate_tokens(prompt_text), estimate_tokens(text), False
        return ChatAnswer(
            text=text,
            model=model.name,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            usage_reported=reported,
            latency=now - t0,
            seconds=now - started,
            attempts=attempt,
            finish_reason=str(getattr(choice, "finish_reason", "") or ""),
            failures=tuple(failures),
        )

    def close(self) -> None:
        self._closed.set()
        self._client.close()
