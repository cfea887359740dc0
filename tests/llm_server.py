"""A real local HTTP server speaking the OpenAI Chat Completions protocol, for tests.

It listens on 127.0.0.1 (a free port), answers ``POST /v1/chat/completions``, ``POST /v1/embeddings`` (vectors from
``embedder``, by default a bag of hashed tokens: similar texts get similar vectors), ``GET /v1/models`` and
``GET /v1/models/<id>``, and returns scripted answers and scripted failures: an HTTP status with headers (429 with
Retry-After, 500), a delay longer than the client's timeout, a connection dropped without any answer, an answer
without a ``usage`` object, and malformed answers a broken proxy or server sends with status 200 (``MALFORMED``: a
body that is not JSON, JSON cut short, a body cut short of its Content-Length, an HTML page, no ``choices``, empty
content, wrong shapes). ``garbage_responder`` answers garbage on every call or on every n-th. Every request is
recorded, and usage is counted per model, so tests can compare the client's accounting with what the server billed.

Use it through the ``llm_server`` fixture (import it into the test module) or directly:

    with ChatServer(models=["fast", "strong"]) as server:
        server.push(Reply(content="..."), Reply(status=429, headers={"Retry-After": "1"}))
        ... OpenAI(base_url=server.url, api_key="test") ...

Replies are served from the queue first (``push``), then from ``responder`` (a function of the parsed request body),
then a default answer. ``go_down()`` closes the listening socket and every open connection (the endpoint is down:
connections are refused); ``come_up()`` listens again on the same port.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_CONTENT = "I have no suggestion."


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the server."""

    content: str | None = DEFAULT_CONTENT  # None: ``"content": null``
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow model)
    drop: bool = False  # close the connection without sending anything
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens; None: estimated from the text
    omit_usage: bool = False  # answer without a ``usage`` object (some local servers do)
    error: str = ""  # error message for non-200 statuses
    finish_reason: str = "stop"
    body: str | None = None  # sent as-is instead of a Chat Completions payload (with ``content_type``)
    content_type: str = "application/json"
    payload: Any = None  # a JSON payload sent instead of the well-formed one (wrong shapes)
    truncate: bool = False  # announce the whole body's length, send half of it, then close the connection

    @property
    def malformed(self) -> bool:
        return self.body is not None or self.payload is not None or self.truncate


# Answers with status 200 that carry no usable completion, by kind.
MALFORMED: dict[str, Reply] = {
    "not_json": Reply(body="upstream connect error or disconnect/reset before headers"),
    "cut_json": Reply(body='{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "mess'),
    "truncated": Reply(content="<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 0.25\n>>>>>>> REPLACE\n",
                       truncate=True),
    "html": Reply(body="<html><body><h1>Sign in to continue</h1></body></html>", content_type="text/html"),
    "no_choices": Reply(payload={"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                                 "choices": []}),
    "missing_choices": Reply(payload={"id": "chatcmpl-1", "object": "chat.completion", "created": 0}),
    "empty_content": Reply(content=""),
    "null_content": Reply(content=None),
    "choices_not_a_list": Reply(payload={"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                                         "model": "m", "choices": {"message": {"content": "hi"}}}),
    "content_not_text": Reply(payload={"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                                       "choices": [{"index": 0, "finish_reason": "stop",
                                                    "message": {"role": "assistant", "content": {"text": 1}}}]}),
    "json_list": Reply(body="[1, 2, 3]"),
    "error_in_200": Reply(payload={"error": {"message": "upstream model crashed", "type": "server_error"}}),
}


Responder = Callable[[dict[str, Any]], Reply]
Embedder = Callable[[str], list[float]]
EMBEDDING_DIMS = 64


def hashed_tokens_embedding(text: str) -> list[float]:
    """A deterministic stand-in for an embeddings model: counts of word tokens hashed into ``EMBEDDING_DIMS`` bins,
    so texts sharing most tokens get a cosine similarity near 1 and unrelated texts a low one."""
    vector = [0.0] * EMBEDDING_DIMS
    for token in re.findall(r"[A-Za-z_]\w*|\d+|\S", text):
        vector[int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "little") % EMBEDDING_DIMS] += 1
    return vector


def estimate_tokens(text: str) -> int:
    """The server's token count: about four characters per token, like real tokenizers on English and code."""
    return len(text) // 4 + 1


def openai_error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class ChatServer:
    """A scripted Chat Completions endpoint on 127.0.0.1. Thread-safe; start/stop or use as a context manager."""

    def __init__(
        self,
        models: list[str] | tuple[str, ...] = ("test-model",),
        api_key: str | None = None,
        responder: Responder | None = None,
        list_models: bool = True,
        listed: list[str] | None = None,
    ) -> None:
        self.models = list(models)  # served models; others get 404 model_not_found
        self.listed = listed  # models shown by GET /v1/models (default: all served ones)
        self.api_key = api_key  # when set, requests without "Authorization: Bearer <api_key>" get a 401
        self.responder = responder
        self.embedder: Embedder = hashed_tokens_embedding
        self.embedding_requests: list[dict[str, Any]] = []  # parsed embeddings request bodies
        self.embedding_status = 200  # another status: every embeddings request fails with it
        self.list_models = list_models  # False: GET /v1/models answers 404, as some minimal servers do
        self.models_reply: Reply | None = None  # a malformed answer to GET /v1/models (see ``MALFORMED``)
        self.requests: list[dict[str, Any]] = []  # parsed chat request bodies, in arrival order
        self.calls: Counter[str] = Counter()  # chat requests per model (including failed ones)
        self.answered: Counter[str] = Counter()  # 200 answers per model
        self.prompt_tokens: Counter[str] = Counter()
        self.completion_tokens: Counter[str] = Counter()
        self.request_times: list[float] = []  # time.monotonic() of each chat request's arrival
        self.malformed = 0  # malformed 200 answers sent (see ``MALFORMED``)
        self.in_flight = 0  # chat requests being handled now
        self.max_in_flight = 0  # the most handled at once
        self._queue: list[Reply] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL to give the OpenAI client (ends with /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ChatServer:
        handler = _make_handler(self)
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.go_down()

    def go_down(self) -> None:
        """Stop listening and cut every open connection: clients now get connection errors."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def come_up(self) -> None:
        """Listen again on the same port."""
        if self._httpd is None:
            self.start()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------------------------------------
    def push(self, *replies: Reply | str) -> None:
        """Queue replies (a string is a 200 answer with that content), served before the responder."""
        with self._lock:
            self._queue.extend(Reply(content=r) if isinstance(r, str) else r for r in replies)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        if self.responder is not None:
            return self.responder(body)
        return Reply()

    @property
    def total_tokens(self) -> int:
        with self._lock:
            return sum(self.prompt_tokens.values()) + sum(self.completion_tokens.values())

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def _make_handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the OpenAI client's connection pool expects

        def setup(self) -> None:
            super().setup()
            # Without these, Nagle's algorithm meeting delayed ACKs adds ~40 ms to every request.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(AttributeError, OSError):
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            server._track(self.connection, True)

        def finish(self) -> None:
            server._track(self.connection, False)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
            pass

        # -- helpers -----------------------------------------------------------------------------------------------
        def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                self.close_connection = True  # the client gave up (timeout) or the server is going down

        def _authorized(self) -> bool:
            if server.api_key is None:
                return True
            if self.headers.get("Authorization", "") == f"Bearer {server.api_key}":
                return True
            self._send_json(401, openai_error("Incorrect API key provided.", "invalid_request_error",
                                              "invalid_api_key"))
            return False

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        # -- routes ------------------------------------------------------------------------------------------------
        def do_GET(self) -> None:
            if not self._authorized():
                return
            path = self.path.rstrip("/")
            if path == "/v1/models" and server.models_reply is not None:
                self._send_malformed(server.models_reply)
                return
            if path == "/v1/models" and server.list_models:
                shown = server.models if server.listed is None else server.listed
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in shown]
                self._send_json(200, {"object": "list", "data": data})
                return
            match = re.fullmatch(r"/v1/models/(.+)", path)
            if match and server.list_models and match.group(1) in server.models:
                self._send_json(200, {"id": match.group(1), "object": "model", "created": 0, "owned_by": "test"})
                return
            self._send_json(404, openai_error(f"Not found: {self.path}", "invalid_request_error", "not_found"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/embeddings":
                self._embeddings(raw)
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send_json(404, openai_error(f"Not found: {self.path}", "invalid_request_error"))
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                self._send_json(400, openai_error(f"invalid JSON: {exc}", "invalid_request_error"))
                return
            model = str(body.get("model", ""))
            with server._lock:
                server.requests.append(body)
                server.calls[model] += 1
                server.request_times.append(time.monotonic())
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._chat(body, model)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _embeddings(self, raw: bytes) -> None:
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                self._send_json(400, openai_error(f"invalid JSON: {exc}", "invalid_request_error"))
                return
            with server._lock:
                server.embedding_requests.append(body)
            model = str(body.get("model", ""))
            if model not in server.models:
                self._send_json(404, openai_error(f"The model `{model}` does not exist.", "invalid_request_error",
                                                  "model_not_found"))
                return
            if server.embedding_status != 200:
                self._send_json(server.embedding_status, openai_error("scripted embeddings failure", "server_error"))
                return
            texts = body.get("input")
            texts = [texts] if isinstance(texts, str) else list(texts or [])
            data = []
            for i, text in enumerate(texts):
                vector = server.embedder(str(text))
                if body.get("encoding_format") == "base64":
                    packed: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                else:
                    packed = vector
                data.append({"object": "embedding", "index": i, "embedding": packed})
            tokens = sum(estimate_tokens(str(t)) for t in texts)
            self._send_json(200, {"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        def _chat(self, body: dict[str, Any], model: str) -> None:
            if model not in server.models:
                self._send_json(404, openai_error(f"The model `{model}` does not exist or you do not have access "
                                                  "to it.", "invalid_request_error", "model_not_found"))
                return
            reply = server.next_reply(body)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.drop:
                self._drop()
                return
            if reply.malformed:
                self._send_malformed(reply)
                return
            if reply.status != 200:
                message = reply.error or f"scripted failure {reply.status}"
                kind = "rate_limit_error" if reply.status == 429 else "server_error"
                self._send_json(reply.status, openai_error(message, kind), reply.headers)
                return
            prompt_text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
            p_tok, c_tok = reply.usage or (estimate_tokens(prompt_text), estimate_tokens(reply.content or ""))
            with server._lock:
                server.answered[model] += 1
                if not reply.omit_usage:
                    server.prompt_tokens[model] += p_tok
                    server.completion_tokens[model] += c_tok
            payload: dict[str, Any] = {
                "id": f"chatcmpl-{len(server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                }],
            }
            if not reply.omit_usage:
                payload["usage"] = {"prompt_tokens": p_tok, "completion_tokens": c_tok,
                                    "total_tokens": p_tok + c_tok}
            self._send_json(200, payload, reply.headers)

        def _send_malformed(self, reply: Reply) -> None:
            with server._lock:
                server.malformed += 1
            if reply.payload is not None:
                self._send_json(reply.status, reply.payload, reply.headers)
                return
            if reply.body is not None:
                data = reply.body.encode()
            else:  # truncate: a well-formed answer, of which only the first half arrives
                data = json.dumps({"id": "chatcmpl-t", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": reply.content}}]}
                                  ).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if reply.truncate else data)
                self.wfile.flush()
            except OSError:
                self.close_connection = True
                return
            if reply.truncate:
                self._drop()

    return Handler


# -- responders useful for end-to-end runs ----------------------------------------------------------------------------

_ASSIGN = re.compile(r"^(?P<lhs>\s*[A-Z_][A-Z0-9_]*\s*=\s*)(?P<num>\d+\.\d+)(?P<rest>.*)$")


def tweak_constant_responder(step: float = 0.01) -> Responder:
    """A responder answering a real SEARCH/REPLACE edit: it finds the first ``NAME = <float>`` line of the evolve block
    shown in the prompt and nudges the number (direction and size derived from the request count, so answers vary).
    Works on problems/circle_packing (MARGIN, SHRINK)."""
    counter = {"n": 0}
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        with lock:
            counter["n"] += 1
            n = counter["n"]
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user")
        inside = False
        candidates: list[re.Match[str]] = []
        for line in text.splitlines():
            if "EVOLVE-BLOCK-START" in line:
                inside = True
            elif "EVOLVE-BLOCK-END" in line:
                inside = False
            elif inside and (match := _ASSIGN.match(line)):
                candidates.append(match)
        if not candidates:
            return Reply(content="I could not find anything to change.")
        match = candidates[n % len(candidates)]
        value = float(match.group("num")) + step * (1 + n % 3) * (1 if n % 2 else -1)
        new_line = f"{match.group('lhs')}{value:.4f}{match.group('rest')}"
        answer = (f"Nudging a constant.\n\n<<<<<<< SEARCH\n{match.group(0)}\n=======\n{new_line}\n"
                  ">>>>>>> REPLACE\n")
        return Reply(content=answer)

    return respond


def garbage_responder(every: int = 1, kinds: tuple[str, ...] = tuple(MALFORMED),
                      good: Responder | None = None) -> Responder:
    """Every ``every``-th call (1: every call) gets a malformed answer, cycling through ``kinds`` of ``MALFORMED``;
    the other calls are answered by ``good`` (default: the default answer)."""
    counter = {"n": 0, "bad": 0}
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        with lock:
            counter["n"] += 1
            bad = counter["n"] % every == 0
            if bad:
                kind = kinds[counter["bad"] % len(kinds)]
                counter["bad"] += 1
        if bad:
            return MALFORMED[kind]
        return good(body) if good is not None else Reply()

    return respond


@pytest.fixture
def llm_server() -> Iterator[ChatServer]:
    """A started ``ChatServer`` serving models "fast" and "strong"; set ``.models``, ``.responder``, ``push()``."""
    server = ChatServer(models=["fast", "strong"]).start()
    try:
        yield server
    finally:
        server.stop()
