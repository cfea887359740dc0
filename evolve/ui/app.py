"""The ``evolve ui`` web application (Starlette): HTML pages rendered with Jinja2 (autoescaped) and small JSON
endpoints that the pages' scripts poll to refresh while runs write.

Safe by default: everything is read-only except ``POST /api/run/<key>/steer``, which needs the UI's token in the
``X-Evolve-Token`` header whatever the bind address. Candidate code, LLM text and artifacts are untrusted: templates
escape them, scripts insert them with ``textContent`` only, and a Content-Security-Policy allows no inline script,
so markup that slipped through could still not run. Problem pictures are sanitised SVG shown through ``<img>``.
"""

from __future__ import annotations

import difflib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, get_lexer_by_name
from pygments.util import ClassNotFound
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from evolve.steering import SteeringError, SteeringLog, append_action, make_action
from evolve.ui.data import (
    AmbiguousProgram,
    ArchiveQueryError,
    ProgramNotFound,
    RunNotFound,
    RunSource,
)
from evolve.ui.oversight import STANDINGS
from evolve.ui.pictures import picture_for
from evolve.ui.store import RunStore

HERE = Path(__file__).parent
TOKEN_HEADER = "x-evolve-token"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class UIConfig:
    """What ``evolve ui`` was started with."""

    root: Path
    token: str  # needed for every steering action; viewing needs none
    host: str = "127.0.0.1"
    pictures: bool = True  # run problems' renderers (trusted code of the problem folders)
    poll_seconds: float = 2.0  # how often pages ask whether the run changed


# ---------------------------------------------------------------------------------------------------------------
# Helpers for templates


def code_html(code: str, language: str) -> str:
    try:
        lexer = get_lexer_by_name(language or "text")
    except ClassNotFound:
        lexer = get_lexer_by_name("text")
    return highlight(code, lexer, HtmlFormatter(cssclass="highlight"))  # Pygments escapes the text


def diff_html(old: str, new: str, old_name: str, new_name: str) -> str:
    text = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_name, tofile=new_name))
    return highlight(text, DiffLexer(), HtmlFormatter(cssclass="highlight")) if text else ""


def fmt_num(value: Any, spec: str = ".8g") -> str:
    if value is None:
        return "-"
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def fmt_time(value: Any) -> str:
    if not isinstance(value, int | float) or not value:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def prompt_messages(prompt: str) -> list[dict[str, str]]:
    """The stored prompt as ``[{role, content}]``; text that is not a message list is one message."""
    if not prompt:
        return []
    try:
        data = json.loads(prompt)
    except ValueError:
        return [{"role": "prompt", "content": prompt}]
    if isinstance(data, list):
        return [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} if isinstance(m, dict)
                else {"role": "", "content": str(m)} for m in data]
    return [{"role": "prompt", "content": json.dumps(data, indent=2)}]


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.autoescape = True  # every template, whatever its name
    env.filters["num"] = fmt_num
    env.filters["when"] = fmt_time
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return templates


# ---------------------------------------------------------------------------------------------------------------
# The application


def create_app(config: UIConfig, store: RunStore | None = None) -> Starlette:
    store = store or RunStore(config.root)
    templates = _templates()
    logs: dict[str, SteeringLog] = {}
    pygments_css = HtmlFormatter(cssclass="highlight").get_style_defs(".highlight")

    def source(request: Request) -> RunSource:
        try:
            return store.get(request.path_params["key"])
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    def steering(src: RunSource) -> SteeringLog:
        if src.key not in logs:
            logs[src.key] = SteeringLog(src.run_dir)
        return logs[src.key]

    def page(request: Request, name: str, **context: Any) -> Response:
        context.setdefault("poll_ms", int(config.poll_seconds * 1000))
        return templates.TemplateResponse(request, name, context)

    def json_response(data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})

    # -- pages ---------------------------------------------------------------------------------------------------

    def runs_page(request: Request) -> Response:
        return page(request, "runs.html", root=str(config.root))

    def compare_page(request: Request) -> Response:
        return page(request, "compare.html", keys=request.query_params.getlist("run"))

    def run_page(request: Request) -> Response:
        src = source(request)
        # The run's version and steering size as the page's scripts would first ask them, taken before any view
        # is read (a write meanwhile shows at the next poll); and the views start loading now.
        version = {"data": src.version(), "steering": steering(src).poll().size}
        header = src.header()
        src.warm(_run_page_views(src))
        return page(request, "run.html", key=src.key, run=header, standings=STANDINGS, version=version)

    def programs_page(request: Request) -> Response:
        src = source(request)
        q = request.query_params
        island = int(q["island"]) if q.get("island", "").lstrip("-").isdigit() else None
        data = src.programs(page=_int(q.get("page"), 0), per_page=50, status=q.get("status", ""), island=island,
                            order=q.get("order", "recent"), standing=q.get("standing", ""))
        return page(request, "programs.html", key=src.key, run=src.overview(), data=data, status=q.get("status", ""),
                    island=island, order=q.get("order", "recent"), standing=data["standing"], standings=STANDINGS)

    def program_page(request: Request) -> Response:
        src = source(request)
        pid = _program_id(src, request.path_params["pid"])
        detail = src.detail(pid)
        record = detail.record
        over = src.overview()
        language = over.get("language") or "text"
        parent = None
        parent_diff = ""
        if record.parent_id:
            try:
                parent = src.record(record.parent_id)
                parent_diff = diff_html(parent.code, record.code, f"parent {parent.program_id}", record.program_id)
            except ProgramNotFound:
                parent = None
        other_id, other_diff, other_error = request.query_params.get("other", "").strip(), "", ""
        if other_id:
            try:
                other = src.record(src.resolve(other_id))
                other_id = other.program_id
                other_diff = diff_html(other.code, record.code, other.program_id, record.program_id)
            except (ProgramNotFound, AmbiguousProgram) as exc:
                other_error = str(exc)
        pic = picture_for(src.run_dir, _info(src), record) if config.pictures else None
        return page(request, "program.html", key=src.key, run=over, r=record, detail=detail, parent=parent,
                    code=code_html(record.code, language), parent_diff=parent_diff, other_id=other_id,
                    other_diff=other_diff, other_error=other_error, messages=prompt_messages(record.prompt),
                    picture=pic, llm=record.llm, oversight=src.program_oversight(record.program_id))

    def picture(request: Request) -> Response:
        src = source(request)
        if not config.pictures:
            raise HTTPException(404, "pictures are disabled (--no-pictures)")
        record = src.record(_program_id(src, request.path_params["pid"]))
        pic = picture_for(src.run_dir, _info(src), record)
        if not pic.svg:
            raise HTTPException(404, pic.error or "this program has no picture")
        return Response(pic.svg, media_type="image/svg+xml",
                        headers={"Content-Security-Policy": SVG_CSP, "Cache-Control": "no-store"})

    def pygments(request: Request) -> Response:
        return Response(pygments_css, media_type="text/css")

    def favicon(request: Request) -> Response:
        return Response(status_code=204)

    # -- JSON ----------------------------------------------------------------------------------------------------

    def api_runs(request: Request) -> Response:
        return json_response({"root": str(config.root), "runs": store.listings(), "now": time.time()})

    def api_version(request: Request) -> Response:
        src = source(request)
        return json_response({"data": src.version(), "steering": steering(src).poll().size})

    def api_part(request: Request) -> Response:
        src = source(request)
        part = request.path_params["part"]
        q = request.query_params
        if part == "overview":
            data = src.overview()
        elif part == "progress":
            data = src.progress()
        elif part == "outcomes":
            data = src.outcomes()
        elif part == "maps":
            data = {"maps": src.maps()}
        elif part == "failures":
            data = src.failures()
        elif part == "tree":
            data = src.tree(root=q.get("root") or None, limit=_int(q.get("limit"), 150),
                            per_node=_int(q.get("per_node"), 6))
        elif part == "programs":
            island = int(q["island"]) if q.get("island", "").lstrip("-").isdigit() else None
            data = src.programs(page=_int(q.get("page"), 0), per_page=_int(q.get("per_page"), 20),
                                status=q.get("status", ""), island=island, order=q.get("order", "recent"),
                                standing=q.get("standing", ""))
        elif part == "audit":
            data = src.audit(page=_int(q.get("page"), 0), per_page=_int(q.get("per_page"), 25))
        elif part == "strategies":
            data = src.strategies()
        elif part == "steering":
            data = steering(src).poll().to_json()
        else:
            raise HTTPException(404, f"no such view {part!r}")
        return json_response(data)

    def api_compare(request: Request) -> Response:
        series = []
        for key in request.query_params.getlist("run")[:12]:
            try:
                series.append(store.get(key).compare_series())
            except RunNotFound as exc:
                series.append({"key": key, "error": str(exc)})
        return json_response({"runs": series})

    async def api_steer(request: Request) -> Response:
        given = request.headers.get(TOKEN_HEADER, "")
        if not given or not secrets.compare_digest(given.encode(), config.token.encode()):
            return json_response({"error": "steering needs the token printed when evolve ui started "
                                           "(sent as the X-Evolve-Token header)"}, 403)
        try:
            body = await request.json()
        except ValueError:
            return json_response({"error": "expected a JSON body"}, 400)
        if not isinstance(body, dict):
            return json_response({"error": "expected a JSON object"}, 400)
        src = source(request)

        def record() -> Any:  # archive queries and an fsync: off the event loop
            action = _steer_action(src, body)
            append_action(src.run_dir, action)
            return action

        try:
            action = await run_in_threadpool(record)
        except (SteeringError, ProgramNotFound, AmbiguousProgram) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"recorded": action.to_json(), "state": steering(src).poll().to_json()})

    # -- errors --------------------------------------------------------------------------------------------------

    def error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
        elif isinstance(exc, ProgramNotFound | RunNotFound):
            status, message = 404, str(exc)
        elif isinstance(exc, AmbiguousProgram):
            status, message = 400, str(exc)
        else:
            status, message = 500, f"{type(exc).__name__}: {exc}"
        if request.url.path.startswith("/api/"):
            return json_response({"error": message}, status)
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": message,
                                                                  "poll_ms": 0}, status_code=status)

    routes = [
        Route("/", runs_page),
        Route("/compare", compare_page),
        Route("/run/{key}", run_page),
        Route("/run/{key}/programs", programs_page),
        Route("/run/{key}/program/{pid}", program_page),
        Route("/run/{key}/program/{pid}/picture.svg", picture),
        Route("/static/pygments.css", pygments),
        Route("/favicon.ico", favicon),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        Route("/api/runs", api_runs),
        Route("/api/compare", api_compare),
        Route("/api/run/{key}/version", api_version),
        Route("/api/run/{key}/steer", api_steer, methods=["POST"]),
        Route("/api/run/{key}/{part}", api_part),
    ]
    hosts = list(LOCAL_HOSTS) if config.host in LOCAL_HOSTS or config.host.startswith("127.") else ["*"]
    if config.host not in hosts and hosts != ["*"]:
        hosts.append(config.host)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts), Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: error, ArchiveQueryError: error, Exception: error},
    )
    app.state.store = store
    app.state.config = config
    return app


class SecurityHeaders:
    """Adds the Content-Security-Policy and friends to every response that does not set its own."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in ((b"content-security-policy", CSP), (b"x-content-type-options", "nosniff"),
                                    (b"referrer-policy", "no-referrer"), (b"x-frame-options", "DENY")):
                    if name not in names:
                        headers.append((name, value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _run_page_views(src: RunSource) -> list[Callable[[], Any]]:
    """The views the run page's script asks for first (``loadAll`` in static/run.js), with the same parameters as
    its requests reach ``api_part``, so that answers computed ahead are the ones it asks for."""
    return [src.overview, src.progress, src.outcomes, src.maps, src.failures, src.tree,
            lambda: src.programs(order="best", per_page=10, status="ok", standing="auto"),
            lambda: src.programs(per_page=20), src.audit, src.strategies]


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _info(src: RunSource) -> dict[str, Any]:
    try:
        data = json.loads((src.run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _program_id(src: RunSource, given: str) -> str:
    try:
        return src.resolve(given)
    except ProgramNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except AmbiguousProgram as exc:
        raise HTTPException(400, str(exc)) from None


def _steer_action(src: RunSource, body: dict[str, Any]) -> Any:
    kind = str(body.get("action", ""))
    program_id = body.get("program_id", "")
    if kind in ("pin", "unpin", "ban", "unban"):
        if not isinstance(program_id, str) or not program_id:
            raise SteeringError(f"{kind} needs a program id")
        program_id = src.resolve(program_id)
        if kind == "pin":
            status = src.record(program_id).status
            if status != "ok":
                raise SteeringError(f"only a program that evaluated ok can be pinned as a parent; "
                                    f"{program_id} is {status}")
    who = body.get("who", "")
    return make_action(kind, program_id=program_id, text=body.get("text", ""),
                       who=who if isinstance(who, str) and who.strip() else "ui", source="ui")
