"""The command line's persisted connection: a quick ``ifctl task heartbeat`` with no agent server.

An agent, or the shell loop beside it, renews its claim with ``ifctl task
heartbeat`` every few seconds to minutes, a new process each time. Loading the
library and connecting (nats-py, asyncio, pydantic, the fleet) costs a few
hundred milliseconds before the heartbeat's one compare-and-swap. The
swarm's own ``ifctl mcp`` answers it when it runs (:mod:`infrafabric.agent.control`);
when none does, the first heartbeat acts on the bus itself and then leaves
this process behind, as ssh's ``ControlPersist`` leaves its master
connection: it holds the fleet on the same bus, with the same settings, and
answers the next heartbeats on a private socket in ``<state dir>/agents/``.

What it may do, and when it goes:

* It answers ``heartbeat`` requests only: the same
  :meth:`IFCoordinator.heartbeat <infrafabric.coordinator.IFCoordinator.heartbeat>`,
  fenced by the same claim token, on the same bus. It never renews anything by
  itself and never marks a swarm present, so a dead agent's claims lapse as
  they would without it.
* Its socket is named by a keyed digest of every ``IF_*`` setting that
  decides the bus and the credentials, and of the interpreter and version
  (:func:`~infrafabric.agent.control.persist_socket`): a command made with
  other settings, or by other code, never reaches it, and the name tells
  nothing of a password.
* One per socket: a lock taken before anything is loaded, so the losers of a
  race to start one exit at once. A socket left by one that was killed does
  not stop the next from starting; one that failed (its log says why) is not
  started again for a minute.
* It exits after ``IF_PERSIST`` seconds without a request (default 600; ``0``
  turns the whole mechanism off), an hour after it started (the next
  heartbeat starts a fresh one, running the code installed since), when its
  socket is removed or replaced (a state directory deleted; ``ifctl
  coordinator stop``), on SIGTERM or SIGINT, and after any request it could
  not answer but for a refusal (the bus failed it, or refused its
  credentials: the command then acts itself, and starts a fresh one). Its
  warnings go to ``persist-<digest>.log`` beside the socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from infrafabric.agent.control import persist_seconds, persist_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_LIFE", "close_all", "main", "spawn"]

#: how often the idle timeout, the lifetime and the socket are checked, in seconds
_TICK = 1.0
#: a connection exits this long after it started, busy or not (after the request in hand): the
#: next heartbeat starts a fresh one, so code installed since is what answers
MAX_LIFE = 3600.0
#: a connection that failed this recently (its log says why) is not started again at once
_BACKOFF = 60.0


def spawn(home: str | os.PathLike[str] | None = None) -> Path | None:
    """Leave a persisted connection behind for this command's settings (see
    the module docs), unless ``IF_PERSIST`` turns it off, one already holds
    the socket, or the last one failed less than a minute ago: the socket it
    will listen on, or None. Returns at once; the process loads and connects
    on its own."""
    try:
        path = persist_socket(home, create=True)
        if path is None or _holder(path) is not None or _failed_lately(path):
            return None
        # the last one's log only (none is alive to write to it): a connection failing again and
        # again must not grow it without end
        with open(path.with_suffix(".log"), "wb") as out:  # the child keeps its own copy of the descriptor
            os.chmod(out.name, 0o600)
            subprocess.Popen(
                [sys.executable, "-m", "infrafabric.agent.persist", str(path),
                 "--home", str(path.parent.parent), "--idle", repr(persist_seconds())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True,
                close_fds=True)
    except OSError as exc:  # the command did its work: this only makes the next one quicker
        import logging

        logging.getLogger("infrafabric.agent.persist").warning(
            "could not leave a persisted connection behind: %s", exc)
        return None
    return path


def _failed_lately(path: Path) -> bool:
    """Whether the last connection here wrote to its log (only a failure
    does) less than :data:`_BACKOFF` seconds ago."""
    try:
        st = os.stat(path.with_suffix(".log"))
    except OSError:
        return False
    return st.st_size > 0 and time.time() - st.st_mtime < _BACKOFF


def _holder(path: Path) -> int | None:
    """The pid of the persisted connection holding the lock of ``path``
    (0 if it has not written it yet), or None when none does: a socket left
    by one that was killed is not one."""
    try:
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
            return int(text) if text.isdigit() else 0
        return None
    finally:
        os.close(fd)  # releases the lock if this took it


def close_all(home: str | os.PathLike[str]) -> int:
    """Close every persisted connection of the state directory ``home``: each
    is sent SIGTERM (one still connecting too) and its socket removed. How
    many were running."""
    closed = 0
    for lock in (Path(home) / "agents").glob("persist-*.lock"):
        sock = lock.with_suffix(".sock")
        pid = _holder(sock)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()  # it exits within a tick of its socket going, whatever else happens
        if pid is not None:
            closed += 1
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
    return closed


def main(argv: list[str] | None = None) -> int:
    """``python -m infrafabric.agent.persist SOCKET --home DIR --idle SECONDS``
    (started by :func:`spawn`)."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(
        prog="python -m infrafabric.agent.persist",
        description="The command line's persisted connection (see infrafabric.agent.persist); "
                    "started by ifctl task heartbeat.")
    parser.add_argument("socket", type=Path)
    parser.add_argument("--home", type=Path, required=True, help="the state directory")
    parser.add_argument("--idle", type=float, required=True,
                        help="exit after this many seconds without a request")
    parser.add_argument("--max-life", type=float, default=MAX_LIFE,
                        help="exit this many seconds after starting [default: %(default)s]")
    args = parser.parse_args(argv)
    path: Path = args.socket.absolute()
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("infrafabric.agent.persist")
    try:
        lock = os.fdopen(os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600), "r+")
    except OSError as exc:
        log.error("cannot open the lock beside %s: %s", path, exc)
        return 1
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another one holds it, and answers
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")  # for close_all, while this holds the lock
        lock.flush()
        import asyncio

        from infrafabric.errors import InfraFabricError

        try:
            asyncio.run(_serve(path, args.home, args.idle, args.max_life))
        except (InfraFabricError, OSError) as exc:  # a bug goes on to a traceback, in the same log
            log.error("the persisted connection at %s failed: %s", path, exc)
            return 1
    return 0


async def _serve(path: Path, home: Path, idle: float, max_life: float) -> None:
    import asyncio

    from infrafabric.agent.control import serve_socket
    from infrafabric.agent.session import answer_heartbeat
    from infrafabric.errors import ConfigurationError, RefusedError
    from infrafabric.fleet import open_fleet

    bus_setting = os.environ.get("IF_BUS_URL") or None
    done = asyncio.Event()
    started = last = time.monotonic()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)

    async with open_fleet(bus_setting, home=home, watch=False, actor="cli", autostart=False) as fleet:
        os.chdir(home)  # a worktree it was started from may go; relative settings were read when connecting

        async def answer(request: dict[str, Any]) -> dict[str, Any]:
            nonlocal last
            last = time.monotonic()
            if request.get("op") != "heartbeat":
                raise ConfigurationError(f"op {str(request.get('op'))[:20]!r} is not heartbeat")
            swarm_id = request.get("swarm_id")
            if not isinstance(swarm_id, str):
                raise ConfigurationError("a heartbeat needs swarm_id (text)")
            try:
                return await answer_heartbeat(fleet.coordinator, swarm_id, bus_setting, request)
            except (ConfigurationError, RefusedError):
                raise  # the request's fault (a stale token): the command reports it
            except Exception:
                # the bus failed it, or refused these credentials, or a bug: the command acts
                # itself, and starts a fresh connection when it can
                done.set()
                raise

        async with serve_socket(path, answer):
            mine = os.stat(path).st_ino
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), _TICK)
                now = time.monotonic()
                if now - last > idle or now - started > max_life or _inode(path) != mine:
                    break


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
