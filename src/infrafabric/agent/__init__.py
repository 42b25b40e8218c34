"""Agents use the fleet natively: an MCP server, lifecycle hooks and the protocol they share.

* :mod:`~infrafabric.agent.session`: :class:`AgentSession`, one swarm's
  protocol (claim, heartbeat with a note, complete, fail, release, block;
  the board, the budget, costs) over the assembled fleet;
* :mod:`~infrafabric.agent.server`: the MCP tools and resources on it
  (``ifctl mcp``), built with the official ``mcp`` SDK;
* :mod:`~infrafabric.agent.hooks`: ``ifctl hook AGENT EVENT`` for Claude
  Code, Codex and Cursor: leases renewed by real activity, no stopping while
  holding a task, the next task handed over instead of going idle;
* :mod:`~infrafabric.agent.control`: the socket over which hooks reach
  their agent's running server.

The MCP SDK is imported only by the server (``pip install 'infrafabric[mcp]'``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the hooks' start-up ~15 ms

if TYPE_CHECKING:
    from infrafabric.agent.server import build_server
    from infrafabric.agent.session import AgentSession

__all__ = ["AgentSession", "build_server"]


def __getattr__(name: str) -> object:
    if name == "AgentSession":
        from infrafabric.agent.session import AgentSession

        return AgentSession
    if name == "build_server":
        from infrafabric.agent.server import build_server

        return build_server
    raise AttributeError(f"module 'infrafabric.agent' has no attribute {name!r}")
