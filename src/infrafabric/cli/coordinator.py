"""``ifctl coordinator start|status|stop``: the embedded local bus."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from infrafabric.bus import from_url, parse_url
from infrafabric.bus.base import Health
from infrafabric.bus.embedded import Embedded
from infrafabric.bus.servers import find_nats_server
from infrafabric.cli.app import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Outcome,
    contract,
    run_async,
    settings,
)
from infrafabric.cli.common import READ_ONLY, Check, falsify_report
from infrafabric.errors import InfraFabricError


@click.group()
def coordinator() -> None:
    """Manage the embedded local coordinator (a durable nats-server in the state directory).

    The state directory is --home, else IF_HOME, else (inside a git repository)
    <common git dir>/infrafabric, one per repository and shared by all its
    worktrees, else ${XDG_STATE_HOME:-~/.local/state}/infrafabric.

    \b
    Examples:
      ifctl coordinator start
      ifctl coordinator status --json
      ifctl coordinator stop
    """


#: how the state directory is chosen, for --why
RESOLUTION = ("the state directory is --home, else IF_HOME, else <common git dir>/infrafabric when "
              "the current directory is in a git repository (one per repository, shared by every "
              "worktree and subdirectory), else ${XDG_STATE_HOME:-~/.local/state}/infrafabric")


def _falsify_start(embedded: Embedded) -> Outcome:
    s = settings()
    checks: list[tuple[str, bool, str]] = []
    try:
        checks.append(("nats-server binary", True, find_nats_server()))
    except InfraFabricError as exc:
        checks.append(("nats-server binary", False, exc.message))
    home = embedded.home
    parent = home if home.exists() else home.parent
    writable = os.access(parent, os.W_OK)
    checks.append(("state directory writable", writable, f"{home} (from {s.home_origin()})"))
    info = embedded.info()
    checks.append(("server", True, f"already running: pid {info.pid} at {info.url} (would say so)"
                   if info else "none running: would start one"))
    failing = [c for c in checks if not c[1]]
    lines = [f"{'ok  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in checks]
    return Outcome(
        data={"mode": "falsify", "would_fail": bool(failing),
              "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks]},
        lines=lines, why=lines, exit_code=EXIT_REFUSED if failing else 0,
    )


@coordinator.command()
@contract
def start() -> Outcome:
    """Start the embedded coordinator detached; say so if it already runs.

    Its data lives in <state dir>/nats (JetStream, fsync on every write); its
    pid and URL in <state dir>/coordinator.json. The state directory is
    --home, else IF_HOME, else one per git repository (shared by its
    worktrees), else ${XDG_STATE_HOME:-~/.local/state}/infrafabric.

    Example: ifctl coordinator start --json
    """
    s = settings()
    embedded = Embedded(s.home)
    if s.falsify:
        return _falsify_start(embedded)
    origin = s.home_origin()
    info, started = embedded.start()
    verb = "started" if started else "already running"
    lines = [f"coordinator {verb}: {info.url} (pid {info.pid}, data {info.data_dir})",
             f"state directory {embedded.home}, from {origin}",
             f"export IF_BUS_URL={info.url}  # to use it from other shells"]
    why = [f"state directory {embedded.home}, from {origin}", RESOLUTION,
           "a running server recorded in coordinator.json was found" if not started
           else "no live server was recorded, so a new one was started"]
    if s.bus:  # the server runs, but this shell's commands go elsewhere
        note = f"{s.bus_origin()} is set ({s.bus}): commands use that bus, not this server"
        lines.append(f"note: {note}")
        why.append(note)
    return Outcome(
        data={"started": started, "running": True, "pid": info.pid, "url": info.url,
              "home": str(embedded.home), "home_origin": origin, "data_dir": info.data_dir},
        lines=lines, why=why,
    )


@coordinator.command()
@contract
def status() -> Outcome:
    """Report whether the bus answers (the embedded one, or IF_BUS_URL if set),
    and where that bus comes from.

    Exit 0 if healthy, 3 if not running or unreachable.

    Example: ifctl coordinator status --json
    """
    s = settings()
    embedded = Embedded(s.home)
    info = None
    if s.falsify:
        return _falsify_status(embedded)
    origin = s.bus_origin()
    why = [f"bus from {origin}",
           "the bus is --bus, else IF_BUS_URL, else the embedded server of the state directory",
           *([] if s.bus else [RESOLUTION])]
    if s.bus:
        url = s.bus
    else:
        info = embedded.info()
        if info is None:
            return Outcome(
                data={"running": False, "healthy": False, "bus": None, "bus_origin": origin,
                      "home": str(embedded.home), "home_origin": s.home_origin()},
                lines=[f"coordinator not running (state directory {embedded.home}, "
                       f"from {s.home_origin()})",
                       "start it with: ifctl coordinator start"],
                why=[*why, "no live nats-server is recorded in coordinator.json"],
                exit_code=EXIT_UNREACHABLE,
            )
        url = info.url
    parse_url(url)
    health = run_async(_probe(url))
    data: dict[str, object] = {"running": True, "healthy": health.ok, "url": str(url), "bus": str(url),
                               "bus_origin": origin, "latency_ms": health.latency_ms,
                               "detail": health.detail}
    if info is not None:
        data.update(pid=info.pid, home=str(embedded.home), home_origin=s.home_origin(),
                    uptime_s=round(time.time() - info.started_at, 1))
    state = "healthy" if health.ok else "UNHEALTHY"
    lines = [f"bus {url}: {state}" + (f" ({health.latency_ms} ms)" if health.ok else ""),
             f"  {health.detail}", f"  from {origin}"]
    if info is not None:
        lines.append(f"  embedded server pid {info.pid}, state directory {embedded.home}")
    return Outcome(data=data, lines=lines,
                   why=[*why, f"health check: one round trip to the engine, bounded by 1 s: {health.detail}"],
                   exit_code=0 if health.ok else EXIT_UNREACHABLE)


def _falsify_status(embedded: Embedded) -> Outcome:
    s = settings()
    checks: list[Check] = []
    url = s.bus
    if url is None:
        info = embedded.info()
        checks.append(Check("embedded coordinator running", info is not None,
                            f"pid {info.pid} at {info.url}, state directory {embedded.home} "
                            f"from {s.home_origin()}" if info else
                            f"none recorded in {embedded.home}, from {s.home_origin()} "
                            "(ifctl coordinator start)"))
        url = info.url if info else None
    if url is not None:
        try:
            parse_url(url)
            checks.append(Check("bus URL parses", True, f"{url} from {s.bus_origin()}"))
            health = run_async(_probe(url))
            checks.append(Check("bus reachable", health.ok, health.detail or ""))
        except InfraFabricError as exc:
            checks.append(Check("bus URL parses", False, exc.message))
    return falsify_report(checks, summary=READ_ONLY)


async def _probe(url: str) -> Health:
    bus = from_url(url)
    try:
        await bus.connect()
    except InfraFabricError as exc:
        return Health(False, bus.scheme, url, None, str(exc))
    try:
        return await bus.health_check()
    finally:
        await bus.close()


@coordinator.command()
@contract
def stop() -> Outcome:
    """Stop the embedded coordinator (only the process recorded in the state directory).

    Example: ifctl coordinator stop
    """
    s = settings()
    embedded = Embedded(s.home)
    if s.falsify:
        info = embedded.info()
        return falsify_report([Check("server", True, f"running: would stop pid {info.pid}" if info
                                     else "none running: nothing to stop (not an error)")])
    info = embedded.stop()
    why = [f"state directory {embedded.home}, from {s.home_origin()}",
           f"only the nats-server recorded in {embedded.home / 'coordinator.json'} is stopped, and only "
           "if that process is still the server it recorded"]
    if info is None:
        return Outcome(data={"stopped": False, "home": str(embedded.home)},
                       lines=[f"coordinator not running (state directory {embedded.home})"],
                       why=[*why, "no live server is recorded"])
    return Outcome(data={"stopped": True, "pid": info.pid, "url": info.url},
                   lines=[f"coordinator stopped (pid {info.pid}); data kept in {Path(info.data_dir)}"],
                   why=[*why, "its JetStream data stays in the state directory; ifctl coordinator start "
                              "resumes with it"])
