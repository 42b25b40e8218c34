"""The agent gateway that ``ifctl coordinator start --listen`` runs: ``ifctl mcp --http`` over TLS, detached.

Agents on other machines reach the fleet only through it, each with a
bearer token bound to its swarm (``ifctl coordinator add-agent``); the bus
stays on this machine's loopback, reached only by the gateway and the
operator's commands. Its TLS files live in ``<state dir>/tls/`` (a private
CA made once, and a server certificate naming every address agents use)
unless given; its pid and URL in ``<state dir>/gateway.json``; its log in
``<state dir>/gateway.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from infrafabric.bus.embedded import Embedded
from infrafabric.bus.servers import pid_alive
from infrafabric.errors import ConfigurationError, ServerError
from infrafabric.pki import ensure_server_files
from infrafabric.serving import LOOPBACK_HOSTS

__all__ = ["Gateway", "GatewayInfo", "advertised_names", "parse_listen"]

START_TIMEOUT = 30.0
_READY = re.compile(r"serving agents at (\S+)")


@dataclass(frozen=True)
class GatewayInfo:
    pid: int
    host: str
    port: int
    #: the URL agents use (``https://NAME:PORT/mcp``)
    url: str
    names: list[str]
    ca: str | None
    cert: str
    key: str
    started_at: float


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``0.0.0.0:8766``, ``10.0.0.5:8766``, ``[::]:8766``) → (host, port);
    exit 2 if malformed."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536 or (
            ":" in host and not bracketed):  # an IPv6 address goes in brackets: [::]:8766
        raise ConfigurationError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:8766 or 10.0.0.5:8766")
    return host, int(port)


def advertised_names(host: str, given: tuple[str, ...]) -> list[str]:
    """The names agents reach the gateway by: ``given``; else the listening
    address; for a wildcard, this machine's name and primary address."""
    if given:
        return list(dict.fromkeys(given))
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    names: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
        names.append(probe.getsockname()[0])
    # the address first (agents may not resolve this machine's name); the names stay in the certificate
    names += [socket.getfqdn(), socket.gethostname()]
    return [n for n in dict.fromkeys(names)
            if n and n not in LOOPBACK_HOSTS and not n.startswith("localhost")] or ["127.0.0.1"]


class Gateway:
    """The gateway process of one state directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.record = home / "gateway.json"
        self.log = home / "gateway.log"
        self.tls_dir = home / "tls"

    def info(self) -> GatewayInfo | None:
        """The recorded gateway if its process is alive and is ours, else None."""
        try:
            info = GatewayInfo(**json.loads(self.record.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not pid_alive(info.pid):
            return None
        try:
            cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        ours = b"--http" in cmdline and str(self.home).encode() in cmdline
        return info if ours else None

    def start(self, host: str, port: int, *, names: list[str], bus: str, embedded: bool,
              tls: tuple[str, str] | None) -> tuple[GatewayInfo, bool]:
        """Start the gateway on ``host:port`` unless it runs; (info, started_now).
        ``bus``: the URL it serves (named, never inherited from the environment);
        ``embedded``: it is the state directory's own server, which takes no TLS
        or credentials, so none from this environment is handed down.
        ``tls``: certificate and key to serve with, else made under ``tls/``."""
        with Embedded(self.home).locked():
            info = self.info()
            if info is not None:
                return info, False
            ca: str | None = None
            if tls is None:
                ca_path, cert_path, key_path = ensure_server_files(
                    self.tls_dir, tuple(dict.fromkeys([*names, "127.0.0.1", "localhost"])))
                ca, tls = str(ca_path), (str(cert_path), str(key_path))
            cmd = [sys.executable, "-m", "infrafabric.cli", "--home", str(self.home),
                   "--bus", bus, "mcp", "--http", "--host", host, "--port", str(port),
                   "--tls-cert", tls[0], "--tls-key", tls[1],
                   *[arg for n in names for arg in ("--allow-host", n)]]
            with open(self.log, "ab") as log:
                offset = log.tell()
                env = {k: v for k, v in os.environ.items()
                       if not (embedded and k.startswith(("IF_BUS_", "IF_AGENT_TOKEN")))}
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, close_fds=True, env=env)
            try:
                bound = self._wait_ready(proc, offset)
            except BaseException:  # never leave a detached gateway serving unrecorded
                proc.kill()
                proc.wait(10)
                raise
            shown = f"[{names[0]}]" if ":" in names[0] else names[0]
            info = GatewayInfo(pid=proc.pid, host=host, port=bound, url=f"https://{shown}:{bound}/mcp",
                               names=names, ca=ca, cert=tls[0], key=tls[1], started_at=time.time())
            tmp = self.record.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(info), indent=2) + "\n")
            os.replace(tmp, self.record)
            return info, True

    def _wait_ready(self, proc: subprocess.Popen[bytes], offset: int) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            found = _READY.search(text)
            if found:
                return int(found.group(1).rsplit(":", 1)[1].split("/", 1)[0])
            if proc.poll() is not None:
                tail = "\n".join(text.strip().splitlines()[-8:])
                raise ServerError(f"the agent gateway exited with code {proc.returncode} during start-up",
                                  hint=f"see {self.log}:\n{tail}")
            time.sleep(0.05)
        raise ServerError(f"the agent gateway did not start within {START_TIMEOUT:g} s",
                          hint=f"see {self.log}")

    def stop(self, timeout: float = 10.0) -> GatewayInfo | None:
        """Stop the recorded gateway (only it); what was stopped, or None."""
        with Embedded(self.home).locked():
            info = self.info()
            if info is None:
                return None
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, 15)
            deadline = time.monotonic() + timeout
            while pid_alive(info.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(info.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, 9)
            return info
