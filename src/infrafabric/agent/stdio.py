"""Serving one agent session over stdio: the fleet, the swarm's presence, the hooks' socket."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from infrafabric.agent.control import serve as serve_control
from infrafabric.agent.server import build_server
from infrafabric.agent.session import DEFAULT_AGENT_LEASE, AgentSession
from infrafabric.fleet import open_fleet

log = logging.getLogger("infrafabric.agent")

__all__ = ["serve_stdio"]


async def serve_stdio(url: str | None, *, home: str | os.PathLike[str] | None, swarm_id: str,
                      capabilities: Sequence[str] | None, lease_ttl: float = DEFAULT_AGENT_LEASE) -> None:
    """Serve ``swarm_id``'s session on stdin/stdout until the client hangs up.

    The swarm is registered (with ``capabilities``, or keeping its own), is
    present on the bus while the session lasts, and its hooks are answered
    on its control socket. Its claims are not renewed by the server's mere
    existence: activity renews them (tool calls, and tool use through the
    hooks), so a session that hangs loses its task after its lease."""
    async with open_fleet(url, home=home, actor=swarm_id, lease_ttl=lease_ttl) as fleet:
        session = AgentSession(fleet, swarm_id, lease_ttl=lease_ttl, bus_setting=url)
        joined = await session.join(capabilities)
        log.info("serving swarm %s (%s) over stdio", swarm_id,
                 ", ".join(joined["capabilities"]) or "no capabilities")

        async def session_for() -> AgentSession:
            return session

        server = build_server(session_for)
        async with fleet.coordinator.present(swarm_id, via="mcp"), serve_control(session, home):
            await server.run_stdio_async()
