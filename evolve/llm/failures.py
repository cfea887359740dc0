"""What can go wrong with one LLM call, by kind, and how an answer body is read without trusting it.

Two families of failure, both retried by the client (``evolve.llm.client``) and both counted toward its patience:
the endpoint says no (an HTTP error status, a dropped connection, a timeout), or it says yes (HTTP 200) with a body
that is no chat completion: not JSON, JSON cut short, a body shorter than its Content-Length, an HTML page from a
proxy, no ``choices``, an empty answer, fields of the wrong type. Neither is ever a child's fault.

The ``openai`` client is lenient about 200 bodies (a non-JSON body comes back as a string, a missing field as
``None``), so the client asks it for the raw response and ``read_completion`` checks the body itself.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import openai


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx, or an error object in a 200 body
    REFUSED = "refused"  # 401/403/404: key, permission or model not (yet) available
    BAD_REQUEST = "bad_request"  # other 4xx: this request is refused; not retried
    CONNECTION = "connection"  # refused, reset or dropped connection
    TIMEOUT = "timeout"  # no answer within the per-call timeout
    TRUNCATED = "truncated"  # the connection closed before the whole body arrived
    BAD_JSON = "bad_json"  # a 200 body declared JSON that does not parse (garbage, or JSON cut short)
    WRONG_CONTENT_TYPE = "wrong_content_type"  # a 200 body that is not JSON and not declared JSON (an HTML page)
    NO_CHOICES = "no_choices"  # JSON without any choice
    BAD_SHAPE = "bad_shape"  # JSON that is not a chat completion (wrong types, no message)
    EMPTY_ANSWER = "empty_answer"  # a completion without text

    @property
    def retried(self) -> bool:
        return self is not FailureKind.BAD_REQUEST

    @property
    def overload(self) -> bool:
        """A sign that the endpoint wants fewer calls in flight."""
        return self in (FailureKind.RATE_LIMITED, FailureKind.SERVER_ERROR, FailureKind.TIMEOUT)


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        code = f"HTTP {self.status} " if self.status else ""
        return f"{self.kind.value}: {code}{self.message}".strip()


class MalformedAnswer(ValueError):
    """A 200 answer that is no usable chat completion. ``usage`` holds the tokens it was billed, when it says."""

    def __init__(self, kind: FailureKind, message: str, usage: tuple[int, int] | None = None):
        super().__init__(message)
        self.failure = Failure(kind, message, 200)
        self.usage = usage


@dataclass(frozen=True)
class Completion:
    """The parts of a well-formed answer the mutator uses."""

    text: str
    finish_reason: str
    usage: tuple[int, int] | None  # (prompt, completion) tokens; None when the server sent no usable usage


def classify(exc: Exception) -> Failure:
    """Turn an exception of one attempt (``openai``'s, or a malformed body's) into a ``Failure``."""
    if isinstance(exc, MalformedAnswer):
        return exc.failure
    if isinstance(exc, openai.APITimeoutError):
        return Failure(FailureKind.TIMEOUT, "no answer within the timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        kind = FailureKind.TRUNCATED if cause is not None and _cut_short(cause) else FailureKind.CONNECTION
        return Failure(kind, f"{exc}{f' ({cause})' if cause else ''}")
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
    if isinstance(exc, ValueError):  # a body the openai client itself failed to decode
        return Failure(FailureKind.BAD_JSON, f"{type(exc).__name__}: {exc}")
    return Failure(FailureKind.CONNECTION, f"{type(exc).__name__}: {exc}")


def _cut_short(cause: BaseException) -> bool:
    text = str(cause).lower()
    return "message body" in text or "incomplete" in text


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


# -- reading a 200 body -----------------------------------------------------------------------------------------------

def _head(body: bytes, limit: int = 160) -> str:
    text = body[:limit].decode("utf-8", errors="replace").replace("\n", " ").strip()
    return repr(text + ("..." if len(body) > limit else ""))


def _usage(payload: dict[str, Any]) -> tuple[int, int] | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or isinstance(prompt, bool) or prompt < 0:
        return None
    if not isinstance(completion, int) or isinstance(completion, bool) or completion < 0:
        completion = 0
    return prompt, completion


def _text(content: Any) -> str | None:
    """The answer's text: a string, or a list of text parts (some servers send parts); ``None`` for other shapes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text", ""), str)
                                         for p in content):
        return "".join(p.get("text", "") for p in content)
    return None


def read_completion(body: bytes, content_type: str) -> Completion:
    """The completion in a 200 body, or ``MalformedAnswer`` saying what is wrong with it.

    A body that parses as a chat completion is accepted whatever its declared content type (some servers send
    ``text/plain``); one that does not is reported as bad JSON, or as the wrong content type when it was not even
    declared JSON (typically an HTML page from a proxy or a login wall).
    """
    try:
        payload = json.loads(body)
    except ValueError as exc:
        if "json" not in content_type.lower():
            raise MalformedAnswer(FailureKind.WRONG_CONTENT_TYPE, f"expected a JSON chat completion, got "
                                  f"{content_type or 'no content type'} ({len(body)} bytes): {_head(body)}") from None
        where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise MalformedAnswer(FailureKind.BAD_JSON, f"the body is not valid JSON{where} ({len(body)} bytes): "
                              f"{_head(body)}") from None
    if not isinstance(payload, dict):
        raise MalformedAnswer(FailureKind.BAD_SHAPE, f"the body is a JSON {type(payload).__name__}, not a chat "
                              f"completion object: {_head(body)}")
    usage = _usage(payload)
    choices = payload.get("choices")
    if not choices:
        error = payload.get("error")
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise MalformedAnswer(FailureKind.SERVER_ERROR, f"an error in a 200 answer: {str(message)[:300]}", usage)
        what = "an empty" if isinstance(choices, list) else "no"
        raise MalformedAnswer(FailureKind.NO_CHOICES, f"the answer has {what} 'choices' list", usage)
    if not isinstance(choices, list):
        raise MalformedAnswer(FailureKind.BAD_SHAPE, f"'choices' is a {type(choices).__name__}, not a list", usage)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise MalformedAnswer(FailureKind.BAD_SHAPE, "the first choice has no 'message' object", usage)
    text = _text(message.get("content"))
    if text is None:
        raise MalformedAnswer(FailureKind.BAD_SHAPE, f"the message content is a "
                              f"{type(message.get('content')).__name__}, not text", usage)
    finish = choice.get("finish_reason")
    finish_reason = finish if isinstance(finish, str) else ""
    if not text.strip():
        why = f" (finish_reason {finish_reason})" if finish_reason else ""
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            why += f"; refusal: {refusal[:200]}"
        raise MalformedAnswer(FailureKind.EMPTY_ANSWER, f"the answer holds no text{why}", usage)
    return Completion(text=text, finish_reason=finish_reason, usage=usage)
