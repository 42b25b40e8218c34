"""What the HTTP front ends (the dashboard, the agent server) share: binding a
listening socket with a clear error, and which names are loopback."""

from __future__ import annotations

import socket

from infrafabric.errors import ConfigurationError

__all__ = ["LOOPBACK_HOSTS", "bind"]

#: the names a loopback-only server answers to
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking socket on ``host:port``, bound here so that a
    port in use or a name that does not resolve is a clear error (exit 2)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigurationError(f"--host {host}: cannot resolve it: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"--port {port}: cannot listen on {host}:{port}: {exc.strerror}",
                                 hint="pick another port with --port N, or --port 0 for any free one",
                                 ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock
