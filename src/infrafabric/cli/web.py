"""``ifctl web``: the live dashboard and ``/metrics`` for one bus."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from infrafabric.bus import EventBus, connect
from infrafabric.bus.bounds import read_limited
from infrafabric.cli.app import Outcome, contract, run_async, settings
from infrafabric.cli.common import Check, bus_check, falsify_report, tls_options
from infrafabric.errors import ConfigurationError, InfraFabricError
from infrafabric.serving import bind, check_exposure, server_tls, tune_gc

if TYPE_CHECKING:
    from starlette.applications import Starlette

DEFAULT_PORT = 8765
TOKEN_ENV = "IF_WEB_TOKEN"
WEB_EXTRA = "pip install 'infrafabric[web]'"


def require_web() -> None:
    """Exit 2 with the install command when the ``web`` extra is missing."""
    missing = []
    for module in ("starlette", "uvicorn", "sse_starlette", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigurationError(f"the dashboard needs {', '.join(missing)}, which are not installed",
                                 hint=WEB_EXTRA)


def read_token(token_file: Path | None) -> str | None:
    """The operator token from ``token_file`` (first line) or ``$IF_WEB_TOKEN``; None: read-only."""
    if token_file is not None:
        try:
            text = read_limited(token_file, what="--token-file", limit=4096).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"--token-file {token_file}: cannot read it: {exc}") from exc
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if len(token) < 16:
            raise ConfigurationError(f"--token-file {token_file}: the token must be at least 16 characters "
                                     "on its first line", hint="python -c 'import secrets; "
                                                               "print(secrets.token_urlsafe(32))' > FILE")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token and len(token) < 16:
        raise ConfigurationError(f"${TOKEN_ENV}: the token must be at least 16 characters")
    return token or None


@dataclass
class Served:
    """A dashboard being served: its base URL, and the server task (done once
    it stops, e.g. on Ctrl-C)."""

    url: str
    done: asyncio.Task[None]
    app: Starlette


@contextlib.asynccontextmanager
async def serve(bus: EventBus, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
                on_ready: Callable[[str], None] | None = None,
                home: str | None = None, allow_hosts: tuple[str, ...] = (),
                tls: tuple[str, str] | None = None) -> AsyncIterator[Served]:
    """Serve the dashboard for ``bus`` in this event loop while the block runs
    (``on_ready`` is told its base URL once it answers; ``home``: the state
    directory whose witness key signs what its actions write; ``allow_hosts``:
    the names it answers to besides loopback and the address it listens on;
    ``tls``: certificate and key files, to serve HTTPS)."""
    import uvicorn

    from infrafabric.web import create_app

    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{bound_port}/"
    listening = () if host in ("0.0.0.0", "::", "") else (host,)  # a wildcard is no name to be reached by
    app = create_app(bus=bus, token=token, home=home, allowed_hosts=(*listening, *allow_hosts))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                            timeout_graceful_shutdown=1, ssl_certfile=tls[0] if tls else None,
                            ssl_keyfile=tls[1] if tls else None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # the socket listens already: once the app's start-up is done, connections are served
        started = asyncio.create_task(app.state.dashboard.started.wait())
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            await task
            raise ConfigurationError("the dashboard did not start (see the messages above)")
        if on_ready is not None:
            on_ready(url)
        yield Served(url, task, app)
    finally:
        app.state.dashboard.end_streams()  # open event streams never end by themselves
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Beyond loopback it needs --tls-cert/--tls-key (or a TLS proxy in "
                   "front and --allow-plain-http).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"A file whose first line is the operator token that allows actions (resetting a "
                   f"breaker). Also read from ${TOKEN_ENV}. Without one the dashboard is read-only.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="A name the dashboard may be reached by (a proxy's, this machine's) besides loopback and "
                   "--host (repeatable); requests for any other Host are refused (DNS rebinding).")
@tls_options()
@click.option("--allow-plain-http", is_flag=True,
              help="Allow a --host beyond loopback without TLS: the operator token and the fleet's state "
                   "then cross the network in clear text, readable and replayable by anyone on the path.")
@contract
def web(host: str, port: int, token_file: Path | None, allow_hosts: tuple[str, ...], tls_cert: Path | None,
        tls_key: Path | None, allow_plain_http: bool) -> Outcome:
    """Serve the live dashboard and Prometheus /metrics for the bus.

    The page shows the task board as a dependency graph and a table (owner,
    lease time left, critical path), the swarms (budget left, spend over time,
    breakers, reputation, SLO), a live event feed, the witness tail with a
    "verify now" button, and what waits for a human. Changes reach the page
    through the bus's watches as they happen (server-sent events; nothing
    polls). Every asset is served locally. /metrics is in Prometheus text
    format (see docs/monitoring.md); /healthz answers 200 while the bus does.

    The dashboard is read-only unless given an operator token (--token-file
    or $IF_WEB_TOKEN); then resetting a breaker or reopening a failed task is
    allowed to whoever presents the token and types the id to confirm, and is
    witnessed; verifying the chain (costly) needs the token too. It answers
    only to loopback names, --host and --allow-host (a page elsewhere cannot
    reach it through DNS rebinding), refuses cross-origin POSTs and any
    token in a URL's query string (tokens go in the Authorization header),
    and sends a Content-Security-Policy that allows only its own assets.
    Beyond loopback it serves HTTPS (--tls-cert/--tls-key) unless
    --allow-plain-http says the network is trusted.

    Runs until interrupted (Ctrl-C). Uses IF_BUS_URL if set; otherwise the
    embedded local coordinator.

    \b
    Examples:
      ifctl web
      ifctl web --port 9000 --token-file ~/.config/infrafabric/web-token
      ifctl web --host 0.0.0.0 --allow-host ops.example --tls-cert ops.pem --tls-key ops.key
    """
    s = settings()
    token = read_token(token_file)
    tls = server_tls(tls_cert, tls_key)
    check_exposure(host, tls=tls is not None, allow_plain_http=allow_plain_http, what="the dashboard")
    if s.falsify:
        checks: list[Check] = []
        try:
            require_web()
            checks.append(Check("web extra installed", True,
                                "starlette, uvicorn, sse-starlette, prometheus-client"))
        except ConfigurationError as exc:
            checks.append(Check("web extra installed", False, f"{exc.message} ({WEB_EXTRA})"))
        try:
            bind(host, port).close()
            checks.append(Check(f"{host}:{port} free", True, ""))
        except ConfigurationError as exc:
            checks.append(Check(f"{host}:{port} free", False, exc.message))
        checks.append(Check("operator token", True, "configured: actions allowed" if token
                            else "none: read-only"))

        async def reach() -> Check:
            async with connect(s.bus_url()) as bus:
                return await bus_check(bus)

        try:
            checks.append(run_async(reach()))
        except InfraFabricError as exc:
            checks.append(Check("bus reachable", False, exc.message))
        return falsify_report(checks)
    require_web()
    url = s.bus_url()
    info: dict[str, Any] = {}

    def ready(base: str) -> None:
        tune_gc()  # this process is the dashboard's server now
        info["url"] = base
        if s.json:
            return
        s.console.print(f"[bold]dashboard[/bold] {base}  (metrics {base}metrics) on {url}")
        s.console.print("  " + ("actions allowed with the operator token" if token else
                                "read-only (no operator token)") + "; Ctrl-C to stop")

    async def main() -> None:
        async with connect(url) as bus, serve(bus, host=host, port=port, token=token,
                                              on_ready=ready, home=s.home,
                                              allow_hosts=allow_hosts, tls=tls) as served:
            await served.done  # until Ctrl-C

    with contextlib.suppress(KeyboardInterrupt):
        run_async(main())
    return Outcome(data={"url": info.get("url"), "bus": url, "actions": token is not None},
                   lines=["dashboard stopped"])
