"""``ifctl mcp --http``: the agent tools over streamable HTTP, for remote and cloud agents.

One server for many agents. Each request carries a bearer token (``ifctl mcp
token issue SWARM``) bound to one swarm: the server acts as that swarm, and
no tool takes a swarm id, so an agent can act only as itself. No token, or
an unknown or revoked one, is answered 401 by the SDK's bearer middleware
before any tool runs. It listens on loopback unless told otherwise, and
answers only to the names it listens on (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from infrafabric.agent.server import build_server
from infrafabric.agent.session import DEFAULT_AGENT_LEASE, AgentSession
from infrafabric.agent.tokens import AgentTokens
from infrafabric.coordinator.core import PRESENCE_TTL
from infrafabric.errors import ConfigurationError, InfraFabricError
from infrafabric.fleet import Fleet, open_fleet
from infrafabric.serving import LOOPBACK_HOSTS, bind

log = logging.getLogger("infrafabric.agent")

__all__ = ["DEFAULT_HTTP_PORT", "serve_http"]

DEFAULT_HTTP_PORT = 8766


class FleetTokenVerifier:
    """The SDK's ``TokenVerifier`` over :class:`AgentTokens`: a live token
    becomes an access token whose ``client_id`` is the swarm it is bound to."""

    def __init__(self, tokens: AgentTokens) -> None:
        self.tokens = tokens

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        try:
            record = await self.tokens.check(token)
        except InfraFabricError as exc:  # the bus is away: refuse (fail closed), say why in the log
            log.warning("cannot check an agent token: %s", exc.message)
            return None
        if record is None:
            return None
        return AccessToken(token=token, client_id=record.swarm_id, scopes=["agent"], subject=record.name)


def sessions_by_token(fleet: Fleet, lease_ttl: float) -> Callable[[], Any]:
    """``session_for`` for the tools: the session of the swarm the request's token is bound to."""
    from mcp.server.auth.middleware.auth_context import get_access_token

    sessions: dict[str, AgentSession] = {}
    touched: dict[str, float] = {}

    async def session_for() -> AgentSession:
        token = get_access_token()
        if token is None:  # the bearer middleware lets nothing through without one
            raise ConfigurationError("this request carries no agent token")
        swarm_id = token.client_id
        session = sessions.get(swarm_id)
        if session is None:
            session = sessions[swarm_id] = AgentSession(fleet, swarm_id, lease_ttl=lease_ttl)
        now = fleet.clock()
        if now - touched.get(swarm_id, -PRESENCE_TTL) >= PRESENCE_TTL / 3:
            # over HTTP an agent is live while its requests arrive: each refreshes its mark at
            # most every ttl / 3, and one that stops calling turns dead a ttl later
            touched[swarm_id] = now
            try:
                await fleet.coordinator.touch(swarm_id, via="mcp-http")
            except InfraFabricError as exc:  # presence is best effort: the tool call goes on
                log.warning("cannot mark %s present: %s", swarm_id, exc.message)
        return session

    return session_for


async def serve_http(url: str | None, *, home: str | os.PathLike[str] | None, host: str = "127.0.0.1",
                     port: int = DEFAULT_HTTP_PORT, lease_ttl: float = DEFAULT_AGENT_LEASE,
                     allow_hosts: tuple[str, ...] = (), tls: tuple[str, str] | None = None,
                     on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the tools over streamable HTTP at ``http://HOST:PORT/mcp`` (or
    ``https://`` with ``tls``: certificate and key files) until cancelled.
    It answers to loopback names (when listening there), ``host`` and
    ``allow_hosts`` (a proxy's name, this machine's), nothing else."""
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls else "http"
    base = f"{scheme}://{shown}:{bound}"
    try:
        async with open_fleet(url, home=home, actor="mcp-http", lease_ttl=lease_ttl) as fleet:
            server = build_server(sessions_by_token(fleet, lease_ttl),
                                  token_verifier=FleetTokenVerifier(AgentTokens(fleet)), base_url=base)
            wildcard = host in ("0.0.0.0", "::", "")  # no name to be reached by
            names = {*(() if wildcard else (shown,)), *(f"[{h}]" if ":" in h else h for h in allow_hosts),
                     *(("127.0.0.1", "localhost", "[::1]") if host in LOOPBACK_HOSTS or wildcard else ())}
            security = TransportSecuritySettings(
                allowed_hosts=[f"{n}:{bound}" for n in names] + [f"{n}:*" for n in names],
                allowed_origins=[f"{scheme}://{n}:{bound}" for n in names])
            # one JSON body per answer rather than an event stream: the tools send no progress
            # events, and a stream costs the server a task and a writer per request (-2 ms a claim)
            app = server.streamable_http_app(host=host, transport_security=security, json_response=True)
            config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                    timeout_graceful_shutdown=1, ssl_certfile=tls[0] if tls else None,
                                    ssl_keyfile=tls[1] if tls else None)
            web = uvicorn.Server(config)
            task = asyncio.create_task(web.serve(sockets=[sock]))
            try:
                # uvicorn tells readiness only by a flag
                while not web.started and not task.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                if web.started and on_ready is not None:
                    on_ready(f"{base}/mcp")
                await task
            finally:
                web.should_exit = True
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        sock.close()
