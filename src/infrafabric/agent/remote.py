"""An agent machine's way to the fleet: the agent gateway, as the swarm its token is bound to.

A machine set up with ``ifctl coordinator add-agent`` holds no bus
credentials. Its ``IF_BUS_URL`` is the gateway (``https://HOST:PORT/mcp``),
``IF_BUS_TLS_CA`` the CA that signed the gateway's certificate, and
``IF_AGENT_TOKEN_FILE`` (or ``IF_AGENT_TOKEN``) its bearer token. Through
:class:`Remote`, ``ifctl task next|heartbeat|complete|fail|release`` and
``ifctl mcp`` call the gateway's tools, which act as the token's swarm and
no other: no tool takes a swarm id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infrafabric.agent.control import is_gateway
from infrafabric.bus.security import Security, access_failure
from infrafabric.errors import (
    BusAccessError,
    BusTimeoutError,
    BusUnavailableError,
    ConfigurationError,
    InfraFabricError,
    RefusedError,
    SwarmStoppedError,
)
from infrafabric.serving import LOOPBACK_HOSTS

__all__ = ["TOKEN_ENV", "TOKEN_FILE_ENV", "Remote", "Upstream", "is_gateway", "serve_proxy"]

log = logging.getLogger("infrafabric.agent")

TOKEN_ENV = "IF_AGENT_TOKEN"
TOKEN_FILE_ENV = "IF_AGENT_TOKEN_FILE"
CA_ENV = "IF_BUS_TLS_CA"


@dataclass(frozen=True)
class Remote:
    """The gateway at ``url``, reached with ``token`` over TLS checked against ``ca``."""

    url: str
    token: str = field(repr=False)
    ca: Path | None = None

    @classmethod
    def from_env(cls, url: str, env: dict[str, str] | None = None) -> Remote:
        """The gateway ``url`` with the token and CA the environment names;
        :class:`ConfigurationError` (exit 2) naming what is missing or wrong."""
        env = dict(os.environ) if env is None else env
        parts = urlsplit(url)
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ConfigurationError(f"{url}: an agent token would cross the network in clear text",
                                     hint="use the https:// URL the operator's add-agent wrote")
        token = env.get(TOKEN_ENV, "").strip()
        origin = f"${TOKEN_ENV}"
        if not token and env.get(TOKEN_FILE_ENV):
            origin = f"${TOKEN_FILE_ENV}={env[TOKEN_FILE_ENV]}"
            try:
                token = Path(env[TOKEN_FILE_ENV]).expanduser().read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise ConfigurationError(f"{origin}: cannot read it ({reason})") from exc
        if not token:
            raise ConfigurationError(f"IF_BUS_URL={url} is an agent gateway, and no agent token is given",
                                     hint=f"set {TOKEN_FILE_ENV} (or {TOKEN_ENV}): source the env file "
                                          "`ifctl coordinator add-agent` wrote")
        ca = None
        if env.get(CA_ENV):
            security = Security.from_options("nats", {}, {CA_ENV: env[CA_ENV]})
            ca = security.ca
        return cls(url.rstrip("/") if parts.path not in ("", "/") else url.rstrip("/") + "/mcp", token, ca)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca) if self.ca else None)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """An initialized MCP client session with the gateway."""
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        refusals: list[int] = []  # the SDK reports an HTTP refusal without its status: kept here

        async def note(response: Any) -> None:
            if response.status_code >= 400:
                refusals.append(response.status_code)

        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=120,
                                  verify=self._context() if self.url.startswith("https") else False,
                                  event_hooks={"response": [note]})
        try:
            async with http, Client(streamable_http_client(self.url, http_client=http)) as session:
                yield session
        except InfraFabricError:
            raise
        except Exception as exc:  # what the SDK and httpx raise, said in our words
            ours = [leaf for leaf in _leaves(exc) if isinstance(leaf, InfraFabricError)]
            if ours:  # raised in the block, wrapped by the SDK's task group on its way out
                raise ours[0] from None
            raise self._failure(exc, refusals) from exc

    def _failure(self, exc: BaseException, refusals: list[int]) -> InfraFabricError:
        """What a failure to reach the gateway means, naming the cause."""
        if 401 in refusals:
            return BusAccessError(f"the gateway at {self.url} refused this agent's token (revoked, or not "
                                  "one it issued)", hint="ask the operator for a new one (ifctl coordinator "
                                                         "add-agent)")
        if refusals:
            status = refusals[-1]
            return BusUnavailableError(f"the gateway at {self.url} answered HTTP {status}",
                                       hint="403/421: it does not serve the name in IF_BUS_URL; ask its "
                                            "operator for the URL add-agent wrote" if status in (403, 421)
                                       else None)
        leaves = _leaves(exc)
        security = Security(tls=True, ca=self.ca, origin={"tls_ca": CA_ENV})
        for leaf in leaves:
            refused = access_failure(self.url, security, leaf)
            if refused is not None:
                return refused
        shown = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves) or str(exc)
        return BusUnavailableError(f"cannot reach the gateway at {self.url}: {shown}",
                                   hint="is `ifctl coordinator start --listen` running there, and is the "
                                        "address reachable from this machine?")

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool`` once; its JSON answer. A refusal is raised as the error
        it stands for, so a command's exit code is the same as with the bus:
        the fleet's bus away (3), a bad argument (2), the swarm stopped by its
        governor (4), any other refusal (1)."""
        async with self.client() as session:
            try:
                return await call_in(session, tool, arguments)
            except RefusedError as exc:
                raise await _classified(session, exc) from None


async def call_in(session: Any, tool: str, arguments: dict[str, Any]) -> Any:
    """Call ``tool`` in an open client ``session``; refusals become :class:`RefusedError`."""
    result = await session.call_tool(tool, {k: v for k, v in arguments.items() if v is not None})
    text = "".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        text = re.sub(r"^Error executing tool \S+: ", "", text)
        raise RefusedError(text or f"{tool} was refused")
    return json.loads(text) if text else None


#: what a guard answers on an agent machine (it lets the edit through: a hook fails open)
GUARD_NOTE = ("path leases are not checked for edits on a machine that reaches the fleet through the agent "
              "gateway; claims still lease their paths on the board")


async def answer_request(call: Callable[[str, dict[str, Any]], Awaitable[Any]],
                         request: dict[str, Any]) -> dict[str, Any]:
    """A control-socket ``request`` (a lifecycle hook's, or a guard's) answered
    through the gateway with ``call(tool, arguments)``."""
    op = request.get("op")
    if op == "guard":
        return {"refusals": [], "notes": [GUARD_NOTE]}
    if op not in ("start", "activity", "stop"):
        raise ConfigurationError(f"op {str(op)[:20]!r} is not start, activity, stop or guard")
    return dict(await call("session_hook", {"op": op, "repeat": bool(request.get("repeat"))}) or {})


async def _classified(session: Any, refused: RefusedError) -> InfraFabricError:
    """What a tool's refusal stands for. A tool error carries only its text:
    the gateway's own words for a bus that did not answer and the SDK's for a
    bad argument tell those apart; a stopped swarm is asked of budget_status."""
    text = refused.message
    if text.startswith("the fleet's bus did not answer"):
        return BusUnavailableError(text, hint="retry in a few seconds")
    if "validation error" in text.lower():
        return ConfigurationError(text)
    try:
        budget = await call_in(session, "budget_status", {})
    except InfraFabricError:
        return refused
    if isinstance(budget, dict) and budget.get("stopped"):
        return SwarmStoppedError(text, swarm_id=str(budget.get("swarm_id")), hint=str(budget["stopped"]))
    return refused


def _leaves(exc: BaseException) -> list[BaseException]:
    """The innermost exceptions of ``exc`` (task groups wrap them in groups and chains)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    found = [exc]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(found) < 10:
        found.append(cause)
        cause = cause.__cause__ or cause.__context__
    return found


#: how long a request waits for the gateway to come back before it is refused
RECONNECT_WAIT = 30.0
#: the longest a call may take (task_next waits up to MAX_WAIT for work), before it is given up
CALL_LIMIT = 180.0


class Upstream:
    """The proxy's session with the gateway, kept by a task of its own and
    opened again whenever it breaks: a gateway restarted (an upgrade, a
    reboot) costs the agent the calls in flight at that moment, not its tools.

    A call waits (at most :data:`RECONNECT_WAIT`) for a live session. A call
    whose session breaks under it is not repeated, since it may have been
    applied (a debit, a completion): its caller is told the outcome is
    unknown. The session is opened again behind it."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.session: Any = None
        self._ready = asyncio.Event()
        self._broken = asyncio.Event()
        self._failure: InfraFabricError | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the first session; a refused token or an untrusted certificate raises here."""
        self._keeper = asyncio.create_task(self._keep())
        await self._wait_ready()

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper

    async def _keep(self) -> None:
        delay, down = 0.1, False
        while True:
            try:
                async with self.remote.client() as session:
                    self.session, self._failure, delay = session, None, 0.1
                    if down:
                        log.warning("the gateway at %s answers again", self.remote.url)
                        down = False
                    self._ready.set()
                    await self._broken.wait()
            except BusAccessError:
                raise  # a refused token or certificate does not come back by trying again: calls get it
            except Exception as exc:  # ours, or the SDK's task group ended with the connection
                if isinstance(exc, InfraFabricError):
                    self._failure = exc
                # said once per outage; the attempts go on quietly
                (log.debug if down else log.warning)("the session with the gateway ended (%s); opening "
                                                     "another", getattr(exc, "message", exc))
                down = True
            finally:
                self._ready.clear()
                self._broken.clear()
                self.session = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _wait_ready(self) -> Any:
        """The live session: at once, or once the keeper opens one, or the
        keeper's refusal; at most :data:`RECONNECT_WAIT` seconds."""
        assert self._keeper is not None
        if not self._ready.is_set():
            ready = asyncio.ensure_future(self._ready.wait())
            try:
                await asyncio.wait({ready, self._keeper}, timeout=RECONNECT_WAIT,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
            if self._keeper.done():
                self._keeper.result()  # raises what ended it
            if not self._ready.is_set():
                raise self._failure or BusUnavailableError(
                    f"the gateway at {self.remote.url} did not answer within {RECONNECT_WAIT:g} s")
        return self.session

    async def run(self, act: Callable[[Any], Awaitable[Any]], *, repeatable: bool) -> Any:
        """``act(session)`` on a live session. ``repeatable`` (a read): done
        again once on a new session if the first broke under it."""
        for attempt in (1, 2):
            session = await self._wait_ready()
            try:
                async with asyncio.timeout(CALL_LIMIT):
                    return await act(session)
            except Exception as exc:
                if self.session is session:
                    self._broken.set()
                if repeatable and attempt == 1:
                    continue
                raise BusTimeoutError(f"the connection to the gateway at {self.remote.url} was lost during "
                                      "the call; its outcome is unknown",
                                      hint="check (board_status, task_next) before repeating it") from exc
        raise AssertionError("unreachable")


async def serve_proxy(remote: Remote) -> None:
    """``ifctl mcp`` on an agent machine: the gateway's tools and resources on
    stdin/stdout, for an agent client that starts its MCP servers as
    commands. Every request goes to the gateway unchanged and acts as the
    token's swarm; the gateway's answers, refusals included, come back as
    they are. The session with the gateway is opened first, so a refused
    token or an untrusted certificate fails before the client is served.
    The lifecycle hooks (``ifctl hook``) are answered on the swarm's control
    socket, through the gateway's ``session_hook`` tool."""
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    from infrafabric.agent.control import serve_answers
    from infrafabric.agent.session import PROTOCOL

    upstream = Upstream(remote)
    await upstream.start()
    try:
        # the token decides who acts; the hooks' socket is named after that swarm
        budget = await upstream.run(lambda c: call_in(c, "budget_status", {}), repeatable=True)
        swarm_id = str(budget["swarm_id"])

        def through(tool: str, args: dict[str, Any]) -> Awaitable[Any]:
            return upstream.run(lambda c: call_in(c, tool, args), repeatable=tool in _READS)

        async def hook(request: dict[str, Any]) -> dict[str, Any]:
            return await answer_request(through, request)

        async def list_tools(_ctx: Any, params: Any) -> Any:
            return await upstream.run(lambda c: c.list_tools(cursor=getattr(params, "cursor", None)),
                                      repeatable=True)

        async def call_tool(_ctx: Any, params: Any) -> Any:
            from mcp.types import CallToolResult, TextContent

            try:
                return await upstream.run(lambda c: c.call_tool(params.name, params.arguments),
                                          repeatable=params.name in _READS)
            except InfraFabricError as exc:  # the agent reads it as any refusal, with what to do
                return CallToolResult(content=[TextContent(type="text", text=f"{exc.message} Next: {exc.hint}"
                                                           if exc.hint else exc.message)], is_error=True)

        async def list_resources(_ctx: Any, params: Any) -> Any:
            return await upstream.run(lambda c: c.list_resources(cursor=getattr(params, "cursor", None)),
                                      repeatable=True)

        async def list_templates(_ctx: Any, params: Any) -> Any:
            return await upstream.run(
                lambda c: c.list_resource_templates(cursor=getattr(params, "cursor", None)), repeatable=True)

        async def read_resource(_ctx: Any, params: Any) -> Any:
            return await upstream.run(lambda c: c.read_resource(str(params.uri)), repeatable=True)

        server: Any = Server("infrafabric", instructions=PROTOCOL, title="InfraFabric fleet (via gateway)",
                             on_list_tools=list_tools, on_call_tool=call_tool,
                             on_list_resources=list_resources, on_list_resource_templates=list_templates,
                             on_read_resource=read_resource)
        async with serve_answers(swarm_id, hook), stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await upstream.close()


#: tools that change nothing, repeated once on a new session if the gateway went away under them
_READS = frozenset({"board_status", "budget_status"})
