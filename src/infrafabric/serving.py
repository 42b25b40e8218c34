"""What the long-lived front ends (the dashboard, the agent servers) share:
binding a listening socket with a clear error, which names are loopback, and
fitting the garbage collector to a server."""

from __future__ import annotations

import gc
import os
import socket
import ssl

from infrafabric.errors import ConfigurationError

__all__ = ["LOOPBACK_HOSTS", "YOUNG_THRESHOLD", "bind", "check_exposure", "server_tls", "tune_gc"]

#: allocations of container objects between two young collections in a server (CPython: 700)
YOUNG_THRESHOLD = 10_000

#: the names a loopback-only server answers to
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking socket on ``host:port``, bound here so that a
    port in use or a name that does not resolve is a clear error (exit 2)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigurationError(f"--host {host}: cannot resolve it: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    # the protocol from getaddrinfo (IPPROTO_TCP), not 0: asyncio turns Nagle's algorithm off
    # (TCP_NODELAY) only on connections of a socket that says it is TCP. With 0, every answer
    # written in two parts waited for the client's delayed ACK: 40 ms per request
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
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


def tune_gc() -> None:
    """Fit CPython's cyclic garbage collector to a long-lived server; call it
    once the server has started (idempotent).

    Why: a server with many agents waiting holds a few hundred objects per
    agent, and much of what a request allocates lives across an await or
    two. With the default thresholds those objects survive the young
    collections (every 700 allocations) into the old generation, which then
    fills and is walked whole: an agent server with 1,000 agents waiting
    (``ifctl bench scale``'s wake-up run) paused 28 times in 20 s, 14 to 134 ms
    each, whichever hand-out was running. So: what exists once the server has
    started (modules, model classes, the fleet: it lives as long as the
    process) is moved out of every walk (:func:`gc.freeze`, after a
    collection so that no garbage is frozen), and the young generation is
    collected every :data:`YOUNG_THRESHOLD` allocations, so that objects in
    flight die young. That run then made one full collection. Memory is
    unchanged: reference counting frees what is not in a cycle, as before."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


PathArg = str | os.PathLike[str] | None


def server_tls(cert: PathArg, key: PathArg) -> tuple[str, str] | None:
    """``(certificate, key)`` files to serve HTTPS with, checked now (exit 2
    naming the option when one is missing or they do not load together);
    None when neither is given."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError("--tls-cert and --tls-key go together: the certificate and its private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(os.fspath(cert), os.fspath(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"--tls-cert {cert} --tls-key {key}: cannot serve with them: "
                                 f"{getattr(exc, 'strerror', None) or exc}",
                                 hint="a PEM certificate (chain) and the PEM private key that matches it",
                                 ) from exc
    return os.fspath(cert), os.fspath(key)


def check_exposure(host: str, *, tls: bool, allow_plain_http: bool, what: str) -> None:
    """Refuse (exit 2) to serve ``what`` beyond loopback in clear text, where
    its tokens would cross the network readable by anyone on the path, unless
    the operator says so with ``--allow-plain-http``."""
    if host in LOOPBACK_HOSTS or tls or allow_plain_http:
        return
    raise ConfigurationError(
        f"--host {host}: {what} would listen beyond loopback without TLS, where its tokens cross the "
        "network in clear text",
        hint="give --tls-cert FILE --tls-key FILE, keep the default 127.0.0.1 behind a TLS proxy, or pass "
             "--allow-plain-http if every machine on the network is trusted")
