"""The start-up check: does the endpoint answer, and does it serve every configured model?

Run once before Ray starts, so a typo in a URL or a model name costs a second, not a cluster start. The endpoint's
model list (``GET /models``) is asked first; a model missing from it (or a server that does not list models) is then
tried with a one-token completion, since some servers (llama.cpp, proxies) accept names they do not list. That
completion is not counted in the run's budget. A model list that is not JSON counts as no list; a completion that is
no chat completion twice in a row (an HTML page: usually a URL that is not the API) stops the run here, while an
empty one-token answer passes (reasoning models often give one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import openai

from evolve.llm.client import error_message, make_openai_client
from evolve.llm.failures import FailureKind, MalformedAnswer, read_completion
from evolve.llm.settings import LLMSettings

PROBE_TIMEOUT = 30.0


class EndpointError(RuntimeError):
    """The endpoint or a model is unusable. The message names the URL, the model and the server's answer."""

    def __init__(self, message: str, url: str, model: str = "", answer: str = ""):
        super().__init__(message)
        self.url = url
        self.model = model
        self.answer = answer


@dataclass(frozen=True)
class ProbeReport:
    api_base: str
    listed: tuple[str, ...] | None  # models the endpoint lists; None when it does not list them
    checks: dict[str, str] = field(default_factory=dict)  # model -> "listed" | "answered" | "rate limited"
    seconds: float = 0.0


def _unreachable(url: str, exc: Exception) -> EndpointError:
    cause = exc.__cause__ or exc.__context__
    detail = f"{exc}" + (f" ({cause})" if cause else "")
    return EndpointError(f"cannot reach the LLM endpoint {url}: {detail}", url, answer=detail)


def probe(settings: LLMSettings, timeout: float | None = None) -> ProbeReport:
    """Check the endpoint and every model of ``settings``; raise ``EndpointError`` at the first problem."""
    url = settings.api_base
    started = time.monotonic()
    client = make_openai_client(settings, timeout=timeout or min(settings.timeout, PROBE_TIMEOUT))
    try:
        listed: list[str] | None
        try:
            listed = _listed(client)
        except openai.APIConnectionError as exc:
            raise _unreachable(url, exc) from None
        except openai.APIStatusError as exc:
            answer = error_message(exc)
            if exc.status_code in (401, 403):
                raise EndpointError(f"the LLM endpoint {url} refused the API key (HTTP {exc.status_code}): {answer}",
                                    url, answer=answer) from None
            if exc.status_code >= 500:
                raise EndpointError(f"the LLM endpoint {url} failed listing its models (HTTP {exc.status_code}): "
                                    f"{answer}", url, answer=answer) from None
            listed = None  # a server without /models; each model is tried below
        checks: dict[str, str] = {}
        for spec in settings.models:
            if listed is not None and spec.name in listed:
                checks[spec.name] = "listed"
                continue
            checks[spec.name] = _try_model(client, url, spec.name, listed)
        return ProbeReport(api_base=url, listed=tuple(listed) if listed is not None else None, checks=checks,
                           seconds=time.monotonic() - started)
    finally:
        client.close()


def _listed(client: openai.OpenAI) -> list[str] | None:
    """The ids the endpoint lists; ``None`` when its answer is not a model list."""
    try:
        data = client.models.list().data
        return [str(m.id) for m in data]
    except (ValueError, TypeError, AttributeError):
        return None


def _try_model(client: openai.OpenAI, url: str, model: str, listed: list[str] | None) -> str:
    known = ""
    if listed:
        shown = ", ".join(listed[:20]) + (f" and {len(listed) - 20} more" if len(listed) > 20 else "")
        known = f"; the endpoint lists: {shown}"
    elif listed is not None:
        known = "; the endpoint lists no models"
    malformed: MalformedAnswer | None = None
    for _ in range(2):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "Answer OK."}], max_tokens=1)
            read_completion(raw.content, raw.headers.get("content-type", ""))
        except openai.APIConnectionError as exc:
            raise _unreachable(url, exc) from None
        except openai.APIStatusError as exc:
            if exc.status_code == 429:
                return "rate limited"  # the model exists; the run's retries will wait for it
            answer = error_message(exc)
            raise EndpointError(f"model {model!r} is not available at the LLM endpoint {url}: HTTP "
                                f"{exc.status_code}: {answer}{known}", url, model=model, answer=answer) from None
        except MalformedAnswer as exc:
            if exc.failure.kind is FailureKind.EMPTY_ANSWER:
                return "answered"
            malformed = exc
            continue
        return "answered"
    assert malformed is not None
    detail = malformed.failure.describe()
    raise EndpointError(f"the LLM endpoint {url} answered a test completion for model {model!r} with something that "
                        f"is not a chat completion ({detail}); is {url} the API's base URL (it usually ends in /v1)?",
                        url, model=model, answer=detail)
