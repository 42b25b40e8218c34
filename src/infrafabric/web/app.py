"""The dashboard as an ASGI app: :func:`create_app`.

See ``docs/web-api.md`` for the routes and the JSON shapes. The app is
read-only unless it is given an operator token: then ``POST
/api/breakers/{swarm}/reset`` and ``POST /api/tasks/{task}/reopen`` with
``Authorization: Bearer <token>`` and an explicit ``{"confirm": "<id>"}`` close
a breaker or give a failed task a fresh set of attempts, witnessed with who did it,
and ``POST /api/witness/verify`` (costly: it reads the whole chain) runs a verify.

Every request passes one guard first: its ``Host`` must be one the dashboard
serves (loopback names, the address it listens on, ``--allow-host``), so a
page on another site cannot read the fleet through DNS rebinding; a POST must
be JSON of at most :data:`MAX_BODY` bytes, and one from a browser page of
another origin is refused. Every response carries a Content-Security-Policy
(only the dashboard's own assets), ``X-Frame-Options: DENY`` and ``nosniff``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infrafabric.bus import EventBus, connect
from infrafabric.coordinator.models import TASK_ID_PATTERN
from infrafabric.errors import InfraFabricError
from infrafabric.serving import LOOPBACK_HOSTS
from infrafabric.web.metrics import FleetCollector, render
from infrafabric.web.view import FleetView

__all__ = ["STATIC", "create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: events a slow page may fall behind by before it is sent a fresh snapshot instead
QUEUE_LIMIT = 5000
PING_SECONDS = 15
#: swarm and task ids share one pattern
_ID = re.compile(f"^{TASK_ID_PATTERN}$")
#: the largest POST body read
MAX_BODY = 64 * 1024
#: the names every dashboard answers to (it listens on loopback by default)
LOCAL_HOSTS = LOOPBACK_HOSTS
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                                 b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def _host_of(value: str) -> str:
    """The host of a ``Host`` header or an origin's authority, without the port."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """The checks every request passes (see the module docs), as ASGI middleware."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host_header = headers.get("host", "")
        refusal: tuple[int, str] | None = None
        query = {name.lower() for name, _ in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                                         keep_blank_values=True)}
        if _host_of(host_header) not in self.allowed:
            refusal = (400, f"host {host_header[:100]!r} is not served here (a guard against DNS rebinding); "
                            "start it with ifctl web --allow-host NAME to serve that name")
        elif query & _TOKEN_PARAMS:
            # a token in a URL lands in logs, history and Referer headers: never accepted there
            refusal = (400, "a token in the query string is refused: send it in the Authorization header "
                            "(Authorization: Bearer <token>)")
        elif scope["method"] == "POST":
            origin = headers.get("origin")
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            length = headers.get("content-length", "")
            if origin is not None and origin != "null" \
                    and origin.split("://", 1)[-1].rstrip("/").lower() != host_header.strip().lower():
                refusal = (403, f"cross-origin request from {origin[:100]!r} refused")
            elif origin == "null":
                refusal = (403, "a request from an opaque origin is refused")
            elif kind != "application/json":
                refusal = (415, "a POST must be JSON (Content-Type: application/json)")
            elif length.isdigit() and int(length) > MAX_BODY:
                refusal = (413, f"the body is larger than {MAX_BODY:,} bytes")

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if refusal is not None:
            await _error(*refusal)(scope, receive, secured)
            return
        await self.app(scope, receive, secured)


#: query parameters that would carry a credential
_TOKEN_PARAMS = frozenset({"token", "access_token", "auth", "bearer", "api_key", "key", "password"})


async def _json_body(request: Request) -> Any:
    """The request's JSON body, at most :data:`MAX_BODY` bytes; ValueError if it
    is not JSON we can use (too large, malformed, nested too deeply)."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise ValueError(f"the body is larger than {MAX_BODY:,} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None


def _json(data: Any) -> str:
    return json.dumps(data, default=str, separators=(",", ":"))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _refusal(exc: InfraFabricError) -> JSONResponse:
    """An action the library refused: 409 when the state does not allow it
    (exit code 1, e.g. the task is no longer failed), else 400 (bad input)."""
    return _error(409 if exc.exit_code == 1 else 400, exc.message)


class _Dashboard:
    def __init__(self, url: str | None, bus: EventBus | None, token: str | None,
                 home: str | os.PathLike[str] | None = None) -> None:
        self.url = url
        self.home = home
        self.bus = bus
        self.token = token
        self.view: FleetView | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self._streams: set[asyncio.Queue[tuple[str, Any] | None]] = set()
        #: set once the view is loaded and the app serves (the end of its lifespan start-up)
        self.started = asyncio.Event()

    def end_streams(self) -> None:
        """End every open event stream (before a shutdown: a stream never ends by itself)."""
        for queue in self._streams:
            queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            bus = self.bus if self.bus is not None else await stack.enter_async_context(
                connect(self.url, home=self.home))
            view = FleetView(bus, home=self.home)
            await view.start()
            stack.push_async_callback(view.close)
            self.view = view
            self.registry.register(FleetCollector(view))
            self.started.set()
            try:
                yield
            finally:
                self.view = None
                self.started.clear()

    def _view(self) -> FleetView:
        if self.view is None:
            raise RuntimeError("the dashboard is not started (run it under an ASGI server with lifespan)")
        return self.view

    # -- pages ---------------------------------------------------------------

    async def index(self, _request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def state(self, _request: Request) -> Response:
        return Response(_json(self.snapshot()), media_type="application/json")

    def snapshot(self) -> dict[str, Any]:
        return {**self._view().snapshot(), "actions": self.token is not None}

    async def events(self, _request: Request) -> Response:
        view = self._view()
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        overflowed = False

        def listener(event: str, data: Any) -> None:
            nonlocal overflowed
            if queue.qsize() >= QUEUE_LIMIT:
                overflowed = True  # this page is too slow: it gets one fresh snapshot instead
                return
            queue.put_nowait((event, data))

        unlisten = view.listen(listener)
        self._streams.add(queue)

        async def stream() -> AsyncIterator[dict[str, str]]:
            nonlocal overflowed
            try:
                yield {"event": "snapshot", "data": _json(self.snapshot())}
                while (item := await queue.get()) is not None:
                    event, data = item
                    if overflowed:
                        overflowed = False
                        while not queue.empty():
                            if queue.get_nowait() is None:
                                return
                        event = "snapshot"
                    if event == "snapshot":
                        data = self.snapshot()
                    yield {"event": event, "data": _json(data)}
            finally:
                unlisten()
                self._streams.discard(queue)

        return EventSourceResponse(stream(), ping=PING_SECONDS, headers={"Cache-Control": "no-cache"})

    async def metrics(self, _request: Request) -> Response:
        return Response(render(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(self, _request: Request) -> Response:
        view = self._view()
        health = await view.bus.health_check()
        body = {"ok": bool(health) and view.connected, "bus": str(view.bus.url), "detail": health.detail,
                "following": view.connected}
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    # -- actions -------------------------------------------------------------

    def _unauthorized(self, request: Request) -> JSONResponse | None:
        """The refusal for a request without the operator token (None: it has it)."""
        if self.token is None:
            return _error(403, "actions are disabled: this dashboard was started without an operator "
                               "token (ifctl web --token-file FILE)")
        given = request.headers.get("authorization", "")
        scheme, _, secret = given.partition(" ")
        good = hmac.compare_digest(secret.strip().encode(), self.token.encode())
        if scheme.lower() != "bearer" or not good:
            return _error(401, "a valid operator token is needed (Authorization: Bearer <token>)")
        return None

    async def verify(self, request: Request) -> Response:
        """Verify the whole chain (costly: it reads every entry), with the operator token."""
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
        return JSONResponse(await self._view().verify())

    async def _action(self, request: Request, what: str, target: str,
                      fields: set[str]) -> dict[str, Any] | JSONResponse:
        """The checks every action makes: an operator token, a well-formed
        target, a JSON object with only ``fields``, and ``confirm`` equal to the
        target. Returns the body, or the refusal to send."""
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
        if not _ID.match(target):
            return _error(400, f"{target!r} is not a valid id")
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return _error(413 if "larger" in str(exc) else 400,
                          f"the body must be JSON: {{\"confirm\": \"{target}\"}} ({exc})")
        if not isinstance(body, dict):
            return _error(400, f"the body must be a JSON object: {{\"confirm\": \"{target}\"}}")
        unknown = sorted(set(body) - fields - {"confirm", "by"})
        if unknown:
            return _error(400, f"unknown field(s): {', '.join(unknown)}")
        if body.get("confirm") != target:
            return _error(400, f"confirm: must be exactly {target!r} to {what}")
        by = body.get("by")
        if by is not None and (not isinstance(by, str) or not 0 < len(by) <= 100):
            return _error(400, "by: must be a name of 1 to 100 characters")
        return body

    @staticmethod
    def _actor(body: dict[str, Any]) -> str:
        return f"{body['by']} (web)" if body.get("by") else "web"

    async def reopen(self, request: Request) -> Response:
        task_id = request.path_params["task"]
        body = await self._action(request, "reopen it", task_id, {"reason"})
        if isinstance(body, JSONResponse):
            return body
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            return _error(400, "reason: must be text of at most 500 characters")
        view = self._view()
        if task_id not in view.tasks:
            return _error(404, f"no task {task_id!r} on this bus")
        try:
            task = await view.reopen_task(task_id, by=self._actor(body), reason=reason)
        except InfraFabricError as exc:
            return _refusal(exc)
        return JSONResponse({"ok": True, "task": json.loads(task.model_dump_json())})

    async def reset(self, request: Request) -> Response:
        swarm = request.path_params["swarm"]
        body = await self._action(request, "reset its breaker", swarm, {"budget_micros"})
        if isinstance(body, JSONResponse):
            return body
        budget = body.get("budget_micros")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            return _error(400, "budget_micros: must be a whole number of micro-dollars >= 0")
        view = self._view()
        if swarm not in view.swarms:
            return _error(404, f"no swarm {swarm!r} on this bus")
        try:
            breaker = await view.reset_breaker(swarm, by=self._actor(body), budget_micros=budget)
        except InfraFabricError as exc:
            return _refusal(exc)
        return JSONResponse({"ok": True, "swarm": swarm, "breaker": breaker.model_dump(mode="json")})


def create_app(url: str | None = None, *, bus: EventBus | None = None, token: str | None = None,
               home: str | os.PathLike[str] | None = None,
               allowed_hosts: Iterable[str] = ()) -> Starlette:
    """The dashboard for the bus at ``url`` (the usual default when None), or
    on an already connected ``bus``. With ``token``, breaker resets are
    allowed to requests carrying it; without, the dashboard is read-only.
    ``home`` is the state directory (its witness key signs what the
    dashboard's actions write; default as everywhere: ``IF_HOME``...).
    ``allowed_hosts``: names it answers to besides the loopback ones (the
    address it listens on, a proxy's name); any other ``Host`` is refused."""
    if token is not None and not token.strip():
        raise ValueError("the operator token must not be empty")
    d = _Dashboard(url, bus, token.strip() if token is not None else None, home)
    routes = [
        Route("/", d.index),
        Route("/api/state", d.state),
        Route("/api/events", d.events),
        Route("/api/witness/verify", d.verify, methods=["POST"]),
        Route("/api/breakers/{swarm}/reset", d.reset, methods=["POST"]),
        Route("/api/tasks/{task}/reopen", d.reopen, methods=["POST"]),
        Route("/metrics", d.metrics),
        Route("/healthz", d.healthz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = LOCAL_HOSTS | {_host_of(h) for h in allowed_hosts if h}
    app = Starlette(routes=routes, lifespan=d.lifespan, middleware=[Middleware(Guard, allowed_hosts=hosts)])
    app.state.dashboard = d
    return app
