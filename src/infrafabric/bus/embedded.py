"""The embedded default: one local, durable ``nats-server`` under the state directory.

The state directory (:func:`state_dir`) is ``--home``, else ``IF_HOME``, else,
inside a git repository, ``infrafabric/`` in the repository's common git
directory (so the main work tree, every linked worktree and every subdirectory
share one board), else the per-user ``${XDG_STATE_HOME:-~/.local/state}/infrafabric``.
The server's data lives in ``<home>/nats/``; its pid, ports and URL
in ``<home>/coordinator.json``. A file lock serialises start and stop, so two
commands racing to start it start one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from infrafabric.bus.servers import NatsServer, free_port, pid_alive
from infrafabric.errors import BusUnavailableError, ConfigurationError, ServerError
from infrafabric.statedir import describe_state_dir, git_common_dir, state_dir

__all__ = ["Embedded", "EmbeddedInfo", "describe_state_dir", "git_common_dir", "state_dir"]



@dataclass(frozen=True)
class EmbeddedInfo:
    pid: int
    port: int
    monitor_port: int
    url: str
    data_dir: str
    started_at: float


class Embedded:
    """Manage the embedded server of one state directory."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = state_dir(home)
        self.record = self.home / "coordinator.json"
        self.data_dir = self.home / "nats"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state directory's lock: starts and stops of its servers (the
        embedded bus, the agent gateway) run one at a time. Not reentrant."""
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds the witness signing key
            fh = open(self.home / "coordinator.lock", "a+")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigurationError(
                f"state directory {self.home} cannot be used: {exc.strerror or exc}",
                hint="point --home / IF_HOME at a directory you can write (created if missing)") from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def info(self) -> EmbeddedInfo | None:
        """The recorded server if its process is alive and is ours, else None."""
        try:
            data = json.loads(self.record.read_text())
            info = EmbeddedInfo(**data)
        except (OSError, ValueError, TypeError):
            return None
        if not pid_alive(info.pid) or not self._is_ours(info.pid):
            return None
        return info

    def _is_ours(self, pid: int) -> bool:
        # Guards against pid reuse: only a nats-server using our config is ours.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return any(part.endswith(b"nats-server") for part in cmdline) and str(
            self.data_dir / "nats.conf"
        ).encode() in cmdline

    def start(self) -> tuple[EmbeddedInfo, bool]:
        """Start the server unless it runs. Returns (info, started_now)."""
        with self.locked():
            info = self.info()
            if info is not None:
                return info, False
            port = self._previous_port()
            server = NatsServer(self.data_dir, port=port)
            try:
                server.start()
            except ServerError:
                if port is None:
                    raise
                server = NatsServer(self.data_dir, port=free_port())
                server.start()
            assert server.pid is not None
            info = EmbeddedInfo(
                pid=server.pid,
                port=server.port,
                monitor_port=server.monitor_port,
                url=server.url,
                data_dir=str(self.data_dir),
                started_at=time.time(),
            )
            tmp = self.record.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(info), indent=2) + "\n")
            os.replace(tmp, self.record)
            return info, True

    def _previous_port(self) -> int | None:
        try:
            port = int(json.loads(self.record.read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return port if 0 < port < 65536 else None

    def ensure(self) -> EmbeddedInfo:
        """The running server, starting it if needed."""
        return self.start()[0]

    def require_running(self) -> EmbeddedInfo:
        info = self.info()
        if info is None:
            raise BusUnavailableError(
                f"no bus configured and the embedded coordinator in {self.home} is not running",
                hint="run `ifctl coordinator start`, or set IF_BUS_URL (e.g. nats://host:4222)",
            )
        return info

    def stop(self, timeout: float = 10.0) -> EmbeddedInfo | None:
        """Stop the recorded server (only it). Returns what was stopped, or None."""
        with self.locked():
            info = self.info()
            if info is None:
                return None
            server = NatsServer(self.data_dir, port=info.port, monitor_port=info.monitor_port)
            server.pid = info.pid
            server.stop(timeout)
            return info
