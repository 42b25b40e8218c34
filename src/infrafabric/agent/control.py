"""The agent server's private control socket, which the hooks talk to.

A running ``ifctl mcp`` listens on ``<state dir>/agents/<digest of the swarm
id>.sock`` (the directory is the user's only: mode 0700, the socket 0600;
a hook refuses a directory that is not). A hook sends one JSON line,
``{"op": "start" | "activity" | "stop", "agent": ..., "repeat": ...}``, and reads
one back: the session's answer (:meth:`AgentSession.on_hook`; the guard and
``ifctl task heartbeat`` ask it too, :meth:`AgentSession.answer`). The server
already holds a connection to the bus and the fleet, so a hook costs a process
start and one round trip; the truth stays on the bus.

With no server listening (a client that starts one per call, or none), the
hook acts on the bus itself, through the same session code, and never starts
the embedded server: an unreachable bus is :class:`Unreachable` and the hook
fails open.

The client side imports only the standard library (hooks must be quick);
the server side imports asyncio when it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

from infrafabric.statedir import state_dir

TYPE_CHECKING = False  # the client side is on the hooks' path: typing alone costs ~15 ms
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
    from typing import Any

    from infrafabric.agent.hooks import Answer
    from infrafabric.agent.session import AgentSession

__all__ = ["DEFAULT_PERSIST", "PERSIST_ENV", "Refused", "Unreachable", "ask", "guard", "heartbeat",
           "is_gateway", "persist_seconds", "persist_socket", "serve", "serve_answers", "serve_socket",
           "socket_path"]

#: a hook waits this long for the server's answer (a stop may claim a task: one compare-and-swap)
ANSWER_TIMEOUT = 5.0
REQUEST_LIMIT = 64 * 1024


class Unreachable(Exception):
    """Neither the agent's server nor the bus answered: the hook fails open."""


class Refused(Exception):
    """The server refused the request as malformed (a bug in the hook's caller)."""


def socket_path(swarm_id: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Where the server of ``swarm_id`` listens, for this project's state
    directory (named by a digest: a swarm id may be longer than a socket
    address allows, and is never a path)."""
    digest = hashlib.sha256(swarm_id.encode("utf-8", errors="replace")).hexdigest()[:24]
    return state_dir(home) / "agents" / f"{digest}.sock"


def ask(swarm_id: str, op: str, *, agent: str, repeat: bool = False,
        home: str | os.PathLike[str] | None = None) -> Answer:
    """The session's answer to a hook event: from the agent's running server,
    else from the bus directly. ``repeat``: the client is asking again after
    a refused stop (Claude's and Codex's ``stop_hook_active``, Cursor's ``loop_count``)."""
    from infrafabric.agent.hooks import Answer

    return Answer.from_dict(_request(swarm_id, {"op": op, "agent": agent, "repeat": repeat}, home))


def guard(swarm_id: str | None, cwd: str, paths: list[str], branches: list[str],
          home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The guard's verdict (``refusals``, ``notes``) on touching ``paths`` and
    checking out ``branches`` from ``cwd``: asked of the swarm's running
    server, else of the bus directly (:class:`Unreachable` if neither answers)."""
    message = {"op": "guard", "cwd": cwd, "paths": paths, "branches": branches}
    if swarm_id is None:
        return _direct(None, message, home)
    return _request(swarm_id, message, home)


def heartbeat(swarm_id: str, task_id: str, claim_id: str | None, lease_ttl: float | None,
              home: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """``ifctl task heartbeat`` through a running server: the swarm's own
    (its ``ifctl mcp``), else the command line's persisted connection
    (:mod:`infrafabric.agent.persist`). Its answer (``task_id``,
    ``lease_until``), or None when neither is there, answers, is on this
    command's bus, or accepts: the command then acts on the bus itself, and so
    reports any refusal in its own words."""
    try:
        persist_seconds(strict=True)
    except ValueError:
        return None  # the full command refuses the setting (exit 2), whichever server runs
    message = {"op": "heartbeat", "task_id": task_id, "claim_id": claim_id, "lease_ttl": lease_ttl,
               "bus": os.environ.get("IF_BUS_URL") or None}
    reply = _heartbeat_on(socket_path(swarm_id, home), message)
    if reply is None:
        persisted = persist_socket(home)
        if persisted is not None:
            reply = _heartbeat_on(persisted, {**message, "swarm_id": swarm_id})
    return reply


def _heartbeat_on(path: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        _check_private(path.parent)
        reply = _round_trip(path, json.dumps(message).encode() + b"\n")
    except (OSError, ValueError, Unreachable):
        return None
    if not reply.get("ok") or not isinstance(reply.get("lease_until"), int | float):
        return None
    return reply


#: seconds the command line's persisted connection waits for a request before it exits
PERSIST_ENV, DEFAULT_PERSIST = "IF_PERSIST", 600.0
#: settings that do not change which bus a command reaches, or as whom
_NOT_THE_CONNECTION = frozenset({"IF_SWARM_ID", "IF_PERSIST", "IF_DEBUG", "IF_CAPABILITIES"})
#: settings (and bus URL options) that name a file or directory
_PATHS = ("IF_HOME", "IF_CACHE_DIR", "IF_NATS_SERVER", "IF_ETCD", "IF_AGENT_TOKEN_FILE", "IF_BUS_TLS_CA",
          "IF_BUS_TLS_CERT", "IF_BUS_TLS_KEY", "IF_BUS_PASSWORD_FILE", "IF_BUS_TOKEN_FILE", "IF_BUS_NKEY",
          "IF_BUS_CREDS")
_PATH_OPTIONS = ("tls_ca", "tls_cert", "tls_key", "password_file", "token_file", "nkey", "creds")


def persist_seconds(environ: Mapping[str, str] | None = None, *, strict: bool = False) -> float:
    """How long the persisted connection idles before it exits: ``IF_PERSIST``
    seconds (default 600); 0 turns it off, and so does a value that is not a
    finite number of seconds, unless ``strict``: then it is a ValueError."""
    value = (os.environ if environ is None else environ).get(PERSIST_ENV, "").strip()
    if not value:
        return DEFAULT_PERSIST
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if 0 <= seconds < float("inf"):
        return seconds
    if strict:
        raise ValueError(f"{PERSIST_ENV}={value[:40]!r} is not a number of seconds (0 or more; 0 turns the "
                         "persisted connection off)")
    return 0.0


def persist_socket(home: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] | None = None, *, create: bool = False) -> Path | None:
    """Where the command line's persisted connection for this state directory
    and these settings listens, or None when ``IF_PERSIST`` turns it off (or
    none was ever started here, unless ``create``).

    Named by a keyed digest of every ``IF_*`` setting that decides the bus
    and the credentials (and of the working directory, when one of them is a
    relative path), and of this interpreter and version: a command reaches
    only a connection made exactly as its own would be, running the same
    code. The key (``agents/persist.key``, the user's only) is there so that
    the name, which a process list shows, tells nothing of a password in
    those settings."""
    from infrafabric import __version__

    environ = os.environ if environ is None else environ
    if not persist_seconds(environ):
        return None
    agents = state_dir(home) / "agents"
    key = _persist_key(agents, create=create)
    if key is None:
        return None
    settings = sorted((k, v) for k, v in environ.items()
                      if k.startswith("IF_") and k not in _NOT_THE_CONNECTION)
    settings += [("python", sys.executable), ("version", __version__)]
    if _names_a_relative_path(environ):
        settings.append(("cwd", os.getcwd()))
    digest = hashlib.blake2b(json.dumps(settings).encode("utf-8", errors="replace"), key=key, digest_size=12)
    return agents / f"persist-{digest.hexdigest()}.sock"


_KEY_SIZE = 32


def _persist_key(agents: Path, *, create: bool) -> bytes | None:
    path = agents / "persist.key"
    key = _read(path)
    if len(key) != _KEY_SIZE and create:
        agents.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(agents, 0o700)
        fresh = agents / f".persist.key.{os.getpid()}"
        with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(os.urandom(_KEY_SIZE))
        try:
            os.link(fresh, path)  # made only if there is none: a command racing this one keeps its own
        except FileExistsError:
            if len(_read(path)) != _KEY_SIZE:  # a damaged one is replaced
                os.replace(fresh, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fresh)
        key = _read(path)
    return key if len(key) == _KEY_SIZE else None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _names_a_relative_path(environ: Mapping[str, str]) -> bool:
    if any(environ.get(name) and not os.path.isabs(environ[name]) for name in _PATHS):
        return True
    query = environ.get("IF_BUS_URL", "").partition("?")[2]
    for pair in query.split("&"):
        option, _, value = pair.partition("=")
        if option in _PATH_OPTIONS and value and not value.startswith(("/", "%2F", "%2f")):
            return True
    return False


def is_gateway(url: str | None) -> bool:
    """Whether ``url`` names an agent gateway rather than a bus (here, on the
    hooks' path, because this module imports nothing it does not need)."""
    return bool(url) and str(url).lower().startswith(("https://", "http://"))


def _request(swarm_id: str, message: dict[str, Any], home: str | os.PathLike[str] | None) -> dict[str, Any]:
    path = socket_path(swarm_id, home)
    request = json.dumps(message).encode() + b"\n"
    if path.exists():
        _check_private(path.parent)
        try:
            reply = _round_trip(path, request)
        except TimeoutError as exc:  # alive but stuck: do not race it from here; let the agent go on
            raise Unreachable(f"the agent's ifctl mcp did not answer within {ANSWER_TIMEOUT:g} s") from exc
        except (OSError, ValueError):
            reply = None  # a server that died (before or while answering): go to the bus
        if reply is not None:
            if not reply.get("ok"):
                raise Refused(str(reply.get("error", "refused")))
            return reply
    return _direct(swarm_id, message, home)


def _check_private(directory: Path) -> None:
    """The socket directory must be the user's alone: a socket planted by
    someone else could answer for the agent's server."""
    st = os.stat(directory)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise Unreachable(f"{directory} is not private to this user (owner uid {st.st_uid}, mode "
                          f"{st.st_mode & 0o777:o}): not trusting the socket in it")


def _round_trip(path: Path, request: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(ANSWER_TIMEOUT)
        _in_directory(path.parent, lambda: sock.connect(path.name))
        sock.sendall(request)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("not an answer")
    return answer


def _in_directory(directory: Path, act: Callable[[], None]) -> None:
    """Run ``act`` with ``directory`` as the working directory: a socket is
    bound and reached by its name relative to it, because a long state path
    may not fit a socket address (108 bytes)."""
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(directory)
        act()
    finally:
        os.fchdir(here)
        os.close(here)


def _direct(swarm_id: str | None, message: dict[str, Any],
            home: str | os.PathLike[str] | None) -> dict[str, Any]:
    import asyncio

    from infrafabric.agent.session import AgentSession, answer_guard
    from infrafabric.errors import InfraFabricError
    from infrafabric.fleet import open_fleet

    async def go() -> dict[str, Any]:
        url = os.environ.get("IF_BUS_URL", "")
        if is_gateway(url):
            return await _through_gateway(url, message)
        async with open_fleet(home=home, watch=False, actor=swarm_id or "guard", autostart=False) as fleet:
            if swarm_id is None:
                return await answer_guard(fleet, None, message)
            return await AgentSession(fleet, swarm_id).answer(message)

    try:
        return asyncio.run(go())
    except InfraFabricError as exc:
        if not exc.transient:  # the request itself is refused (a guard's cwd that is no directory)
            raise Refused(exc.message) from exc
        raise Unreachable(f"the fleet's bus did not answer: {exc.message}") from exc
    except Exception as exc:  # a hook must never leave the agent with a traceback: it fails open
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc


def serve(session: AgentSession, home: str | os.PathLike[str] | None = None,
          ) -> contextlib.AbstractAsyncContextManager[Path]:
    """Answer hooks for ``session`` on its socket while the block runs. The
    newest server of a swarm answers: it replaces an older one's socket, and
    a server removes only its own socket when it ends."""
    return serve_answers(session.swarm_id, session.answer, home)


async def _through_gateway(url: str, message: dict[str, Any]) -> dict[str, Any]:
    """A hook's request on an agent machine, answered by the gateway (as the token's swarm)."""
    from infrafabric.agent.remote import Remote, answer_request

    return await answer_request(lambda tool, args: Remote.from_env(url).call(tool, args), message)


@contextlib.asynccontextmanager
async def serve_answers(swarm_id: str, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                        home: str | os.PathLike[str] | None = None) -> AsyncIterator[Path]:
    """Answer hooks for ``swarm_id`` with ``answer(request)`` on its socket
    while the block runs (:func:`serve`; an agent machine's ``ifctl mcp``
    answers through the gateway)."""
    async with serve_socket(socket_path(swarm_id, home), answer) as path:
        yield path


@contextlib.asynccontextmanager
async def serve_socket(path: Path, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                       ) -> AsyncIterator[Path]:
    """Answer each request on the socket at ``path`` with ``answer(request)``
    while the block runs: its directory made private, the socket bound
    under a name of its own and renamed over ``path``, and removed on exit
    unless a newer server has replaced it."""
    import asyncio

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    # Bound under a name of its own, then renamed over the old one: a hook
    # looking for the socket finds the old one or the new one, never nothing.
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _in_directory(path.parent, lambda: listener.bind(fresh.name))  # bound before any await
        os.chmod(fresh, 0o600)
        mine = os.stat(fresh).st_ino
        os.replace(fresh, path)
    except BaseException:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            fresh.unlink()
        raise

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await _answer(answer, line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, sock=listener, limit=REQUEST_LIMIT)
    try:
        yield path
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == mine:  # not a newer server's socket
                os.unlink(path)
        await server.wait_closed()


async def _answer(answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                  line: bytes) -> dict[str, Any]:
    from infrafabric.errors import InfraFabricError

    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise TypeError("not an object")
        op = request["op"]
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
    try:
        return {"ok": True, **await answer(request)}
    except InfraFabricError as exc:
        if not exc.transient:  # a request the session refuses as malformed
            return {"ok": False, "error": exc.message}
        return {"ok": True, "notes": [exc.message], "unreachable": True}  # the bus is away: fail open
    except Exception as exc:  # never leave a hook without an answer (it would wait, then fall back)
        import logging

        logging.getLogger("infrafabric.agent").exception("hook %s failed", op)
        return {"ok": True, "notes": [f"the agent's server failed: {type(exc).__name__}: {exc}"]}
