"""The agent server's private control socket, which the hooks talk to.

A running ``ifctl mcp`` listens on ``<state dir>/agents/<swarm>.sock`` (the
directory is the user's only: mode 0700, the socket 0600). A hook sends one
JSON line, ``{"op": "start" | "activity" | "stop", "agent": ...}``, and reads
one back: the session's answer (:meth:`AgentSession.on_hook`). The
server already holds a connection to the bus and the fleet, so a hook costs
a process start and one round trip; the truth stays on the bus.

With no server listening (a client that starts one per call, or none), the
hook acts on the bus itself, through the same session code, and never starts
the embedded server: an unreachable bus is :class:`Unreachable` and the hook
fails open.

The client side imports only the standard library (hooks must be quick);
the server side imports asyncio when it is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from infrafabric.statedir import state_dir

TYPE_CHECKING = False  # the client side is on the hooks' path: typing alone costs ~15 ms
if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any

    from infrafabric.agent.hooks import Answer
    from infrafabric.agent.session import AgentSession

__all__ = ["Refused", "Unreachable", "ask", "serve", "socket_path"]

#: a hook waits this long for the server's answer (a stop may claim a task: one compare-and-swap)
ANSWER_TIMEOUT = 10.0
REQUEST_LIMIT = 64 * 1024


class Unreachable(Exception):
    """Neither the agent's server nor the bus answered: the hook fails open."""


class Refused(Exception):
    """The server refused the request as malformed (a bug in the hook's caller)."""


def socket_path(swarm_id: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Where the server of ``swarm_id`` listens, for this project's state directory."""
    return state_dir(home) / "agents" / f"{swarm_id}.sock"


def ask(swarm_id: str, op: str, *, agent: str, home: str | os.PathLike[str] | None = None) -> Answer:
    """The session's answer to a hook event: from the agent's running server,
    else from the bus directly."""
    from infrafabric.agent.hooks import Answer

    path = socket_path(swarm_id, home)
    request = json.dumps({"op": op, "agent": agent}).encode() + b"\n"
    if path.exists():
        try:
            reply = _round_trip(path, request)
        except OSError:
            reply = None  # a server that died without removing its socket: go to the bus
        if reply is not None:
            if not reply.get("ok"):
                raise Refused(str(reply.get("error", "refused")))
            return Answer.from_dict(reply)
    return Answer.from_dict(_direct(swarm_id, op, home))


def _round_trip(path: Path, request: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(ANSWER_TIMEOUT)
        # a long state path may not fit a socket address (108 bytes): connect relative to its directory
        here = os.open(".", os.O_RDONLY)
        try:
            os.chdir(path.parent)
            sock.connect(path.name)
        finally:
            os.fchdir(here)
            os.close(here)
        sock.sendall(request)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


def _direct(swarm_id: str, op: str, home: str | os.PathLike[str] | None) -> dict[str, Any]:
    import asyncio

    from infrafabric.agent.session import AgentSession
    from infrafabric.errors import BusError, InfraFabricError
    from infrafabric.fleet import open_fleet

    async def go() -> dict[str, Any]:
        async with open_fleet(home=home, watch=False, actor=swarm_id, autostart=False) as fleet:
            return await AgentSession(fleet, swarm_id).on_hook(op)

    try:
        return asyncio.run(go())
    except BusError as exc:
        raise Unreachable(f"the fleet's bus did not answer: {exc.message}") from exc
    except InfraFabricError as exc:
        raise Unreachable(exc.message) from exc


@contextlib.asynccontextmanager
async def serve(session: AgentSession, home: str | os.PathLike[str] | None = None) -> AsyncIterator[Path]:
    """Answer hooks for ``session`` on its socket while the block runs."""
    import asyncio

    path = socket_path(session.swarm_id, home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a previous server's, or a dead one's: the newest session answers

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await _answer(session, line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(path.parent)
        server = await asyncio.start_unix_server(handle, path.name, limit=REQUEST_LIMIT)
    finally:
        os.fchdir(here)
        os.close(here)
    os.chmod(path, 0o600)
    try:
        yield path
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await server.wait_closed()


async def _answer(session: AgentSession, line: bytes) -> dict[str, Any]:
    from infrafabric.errors import InfraFabricError

    try:
        request = json.loads(line)
        op = request["op"]
        if op not in ("start", "activity", "stop"):
            raise ValueError(f"unknown op {str(op)[:20]!r}")
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
    try:
        return {"ok": True, **await session.on_hook(op)}
    except InfraFabricError as exc:  # the bus is away: the hook fails open, saying why
        return {"ok": True, "notes": [exc.message]}
