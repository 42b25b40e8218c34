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
* Its socket is named by a digest of every ``IF_*`` setting that decides the
  bus and the credentials (:func:`~infrafabric.agent.control.persist_socket`):
  a command made with other settings never reaches it.
* One per socket: a lock taken before anything is loaded, so the losers of a
  race to start one exit at once.
* It exits after ``IF_PERSIST`` seconds without a request (default 600; ``0``
  turns the whole mechanism off), when its socket is removed or replaced (a
  state directory deleted), on SIGTERM or SIGINT, and after any request the
  bus fails (the command then acts itself, and starts a fresh one). Its
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

__all__ = ["close_all", "main", "spawn"]

#: how often the idle timeout and the socket are checked, in seconds
_TICK = 1.0


def spawn(home: str | os.PathLike[str] | None = None) -> Path | None:
    """Leave a persisted connection behind for this command's settings (see
    the module docs), unless ``IF_PERSIST`` turns it off or one already
    listens: the socket it will listen on, or None. Returns at once; the
    process loads and connects on its own."""
    path = persist_socket(home)
    if path is None or _alive(path):
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        with open(path.with_suffix(".log"), "ab") as log:  # the child keeps its own copy of the descriptor
            os.chmod(log.name, 0o600)
            subprocess.Popen(
                [sys.executable, "-m", "infrafabric.agent.persist", str(path),
                 "--home", str(path.parent.parent), "--idle", repr(persist_seconds())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                close_fds=True)
    except OSError as exc:  # the command did its work: this only makes the next one quicker
        import logging

        logging.getLogger("infrafabric.agent.persist").warning(
            "could not leave a persisted connection behind at %s: %s", path, exc)
        return None
    return path


def _alive(path: Path) -> bool:
    """Whether a persisted connection holds the lock of ``path`` (a socket
    left by one that was killed is not one)."""
    try:
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock if this took it
    return False


def close_all(home: str | os.PathLike[str]) -> int:
    """Close every persisted connection of the state directory ``home`` (each
    exits within a second of its socket going, :data:`_TICK`): how many."""
    closed = 0
    for sock in (Path(home) / "agents").glob("persist-*.sock"):
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
            closed += 1
    return closed


def main(argv: list[str] | None = None) -> int:
    """``python -m infrafabric.agent.persist SOCKET --home DIR --idle SECONDS``
    (started by :func:`spawn`)."""
    import argparse
    parser = argparse.ArgumentParser(
        prog="python -m infrafabric.agent.persist",
        description="The command line's persisted connection (see infrafabric.agent.persist); "
                    "started by ifctl task heartbeat.")
    parser.add_argument("socket", type=Path)
    parser.add_argument("--home", type=Path, required=True, help="the state directory")
    parser.add_argument("--idle", type=float, required=True,
                        help="exit after this many seconds without a request")
    args = parser.parse_args(argv)
    path: Path = args.socket.absolute()
    import logging

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
        import asyncio

        try:
            asyncio.run(_serve(path, args.home, args.idle))
        except Exception:
            log.exception("the persisted connection at %s failed", path)
            return 1
    return 0


async def _serve(path: Path, home: Path, idle: float) -> None:
    import asyncio

    from infrafabric.agent.control import serve_socket
    from infrafabric.agent.session import answer_heartbeat
    from infrafabric.errors import ConfigurationError, InfraFabricError
    from infrafabric.fleet import open_fleet

    bus_setting = os.environ.get("IF_BUS_URL") or None
    done = asyncio.Event()
    last = time.monotonic()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)

    async with open_fleet(bus_setting, home=home, watch=False, actor="cli", autostart=False) as fleet:

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
            except InfraFabricError as exc:
                if exc.transient:  # the bus failed it: let the command act, and start a fresh one
                    done.set()
                raise

        async with serve_socket(path, answer):
            mine = os.stat(path).st_ino
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), _TICK)
                if time.monotonic() - last > idle or _inode(path) != mine:
                    break


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
