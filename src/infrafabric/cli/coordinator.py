"""``ifctl coordinator start|status|stop``: the embedded local bus."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from infrafabric.agent.gateway import Gateway, advertised_names, parse_listen
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
from infrafabric.cli.common import (
    ID,
    READ_ONLY,
    Check,
    bus_check,
    falsify_report,
    tls_options,
    who,
    with_fleet,
)
from infrafabric.cli.mcp import check_caps, revoke_token
from infrafabric.errors import BusUnavailableError, ConfigurationError, InfraFabricError
from infrafabric.serving import server_tls

if TYPE_CHECKING:
    from infrafabric.fleet import Fleet


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
@click.option("--listen", metavar="HOST:PORT",
              help="Also serve agents on other machines here: the agent gateway over TLS, tokens required "
                   "(issue them with add-agent). e.g. 0.0.0.0:8766.")
@click.option("--advertise", "advertise", multiple=True, metavar="NAME",
              help="--listen: a name or address agents reach this machine by (repeatable; the first goes "
                   "in their URL) [default: the --listen address; for 0.0.0.0, this machine's name and "
                   "address].")
@tls_options("--listen: ", "serve with this PEM certificate instead of one from the state directory's CA.")
@contract
def start(listen: str | None, advertise: tuple[str, ...], tls_cert: Path | None,
          tls_key: Path | None) -> Outcome:
    """Start the embedded coordinator detached; say so if it already runs.

    Its data lives in <state dir>/nats (JetStream, fsync on every write); its
    pid and URL in <state dir>/coordinator.json. The state directory is
    --home, else IF_HOME, else one per git repository (shared by its
    worktrees), else ${XDG_STATE_HOME:-~/.local/state}/infrafabric.

    With --listen HOST:PORT it also serves agents on other machines, safely by
    default: the agent gateway (ifctl mcp --http) over TLS, with a CA and
    server certificate made under <state dir>/tls unless --tls-cert/--tls-key
    are given, and no anonymous access: each agent needs a token bound to its
    swarm (ifctl coordinator add-agent). The bus itself stays on loopback:
    agent machines never hold bus credentials.

    \b
    Examples:
      ifctl coordinator start --json
      ifctl coordinator start --listen 0.0.0.0:8766 --advertise build-1.example
    """
    s = settings()
    embedded = Embedded(s.home)
    listening = parse_listen(listen) if listen else None
    tls = server_tls(tls_cert, tls_key)
    if listening is None and (advertise or tls):
        raise ConfigurationError("--advertise, --tls-cert and --tls-key go with --listen HOST:PORT")
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
    data: dict[str, object] = {"started": started, "running": True, "pid": info.pid, "url": info.url,
                               "home": str(embedded.home), "home_origin": origin, "data_dir": info.data_dir,
                               "gateway": None}
    if listening is not None:
        gateway = Gateway(embedded.home)
        names = advertised_names(listening[0], advertise)
        # the bus is named, never inherited: this shell may hold another IF_BUS_URL
        g, g_started = gateway.start(*listening, names=names, bus=s.bus or info.url, embedded=not s.bus,
                                     tls=tls)
        data["gateway"] = {"started": g_started, "pid": g.pid, "url": g.url, "listen": f"{g.host}:{g.port}",
                           "ca": g.ca, "names": g.names}
        verb = "started" if g_started else "already running"
        lines.append(f"agent gateway {verb}: {g.url} "
                     f"(listening on {g.host}:{g.port}, TLS, tokens required; pid {g.pid})")
        if not g_started and (g.host, g.port) != listening and listening[1] != 0:
            lines.append(f"note: it listens on {g.host}:{g.port}, not {listen}: `ifctl coordinator stop`, "
                         "then start again, to change it")
        lines.append("next: ifctl coordinator add-agent NAME --swarm ID --out NAME.env  "
                     "(one per agent machine)")
        why += [f"the gateway serves HTTPS with {g.cert}" + (f", signed by the CA {g.ca}" if g.ca else ""),
                "agents authenticate with a bearer token bound to one swarm; the bus stays on loopback"]
    return Outcome(data=data, lines=lines, why=why)


@coordinator.command()
@contract
def status() -> Outcome:
    """Report whether the bus answers (the embedded one, or IF_BUS_URL if set),
    and where that bus comes from.

    Exit 0 if healthy, 3 if not running or unreachable.

    Example: ifctl coordinator status --json
    """
    s = settings()
    gateway = None
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
        gateway = Gateway(embedded.home).info()
        data["gateway"] = None if gateway is None else {"pid": gateway.pid, "url": gateway.url,
                                                        "listen": f"{gateway.host}:{gateway.port}",
                                                        "ca": gateway.ca}
    state = "healthy" if health.ok else "UNHEALTHY"
    lines = [f"bus {url}: {state}" + (f" ({health.latency_ms} ms)" if health.ok else ""),
             f"  {health.detail}", f"  from {origin}"]
    if info is not None:
        lines.append(f"  embedded server pid {info.pid}, state directory {embedded.home}")
        if gateway is not None:
            lines.append(f"  agent gateway {gateway.url} (TLS, tokens required)")
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
    """Stop the embedded coordinator (only the process recorded in the state directory),
    its agent gateway, and the persisted connections `ifctl task heartbeat` left.

    Example: ifctl coordinator stop
    """
    s = settings()
    embedded = Embedded(s.home)
    if s.falsify:
        info = embedded.info()
        return falsify_report([Check("server", True, f"running: would stop pid {info.pid}" if info
                                     else "none running: nothing to stop (not an error)")])
    from infrafabric.agent.persist import close_all

    gateway = Gateway(embedded.home).stop()
    closed = close_all(embedded.home)  # they would only wait for a server that is gone
    info = embedded.stop()
    why = [f"state directory {embedded.home}, from {s.home_origin()}",
           f"only the nats-server recorded in {embedded.home / 'coordinator.json'} is stopped, and only "
           "if that process is still the server it recorded"]
    persisted = [f"{closed} persisted connection{'s' if closed != 1 else ''} of ifctl task heartbeat closed"
                 ] if closed else []
    if info is None:
        return Outcome(data={"stopped": False, "home": str(embedded.home), "persisted_closed": closed},
                       lines=[f"coordinator not running (state directory {embedded.home})", *persisted],
                       why=[*why, "no live server is recorded"])
    return Outcome(data={"stopped": True, "pid": info.pid, "url": info.url,
                         "gateway_stopped": gateway is not None, "persisted_closed": closed},
                   lines=[f"coordinator stopped (pid {info.pid}); data kept in {Path(info.data_dir)}"]
                   + ([f"agent gateway stopped (pid {gateway.pid})"] if gateway else []) + persisted,
                   why=[*why, "its JetStream data stays in the state directory; ifctl coordinator start "
                              "resumes with it"])


@coordinator.command("add-agent")
@click.argument("name", type=ID)
@click.option("--swarm", "swarm_id", type=ID, required=True, metavar="ID", help="The swarm it acts as.")
@click.option("--cap", "caps", multiple=True, metavar="CAP",
              help="A capability the swarm offers (repeatable); registers or updates the swarm with them. "
                   "Without any, the swarm must be registered already.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The env file to write [default: ./NAME.env]; the CA and the token go beside it.")
@click.option("--agent-dir", metavar="DIR",
              help="Where the files will be on the agent machine, for the paths in the env file "
                   "[default: the --out file's directory, absolute].")
@click.option("--by", metavar="NAME", help="Who adds it [default: $USER].")
@contract
def add_agent(name: str, swarm_id: str, caps: tuple[str, ...], out: Path | None, agent_dir: str | None,
              by: str | None) -> Outcome:
    """Let one agent machine join through the agent gateway, as SWARM.

    Writes three files: NAME.env (IF_BUS_URL = the gateway, and the paths of
    the other two), NAME-ca.pem (the CA that signed the gateway's certificate)
    and NAME.token (its bearer token, bound to --swarm; 0600). Copy them to
    the agent machine; with NAME.env sourced, `ifctl task next|heartbeat|
    complete|fail|release` and `ifctl mcp` there act as that swarm, and as no
    other. The token is kept only hashed on the bus; `ifctl coordinator
    revoke-agent NAME` ends it. Needs `ifctl coordinator start --listen`.

    \b
    Example:
      ifctl coordinator add-agent laptop-7 --swarm session-7 --cap code:python --out agents/laptop-7.env
      scp agents/laptop-7* laptop-7:~/infrafabric/    # then, there: . ~/infrafabric/laptop-7.env
    """
    from infrafabric.agent.tokens import AgentTokens
    from infrafabric.pki import write_private

    s = settings()
    check_caps(caps)
    actor = who(by)
    gateway = Gateway(Embedded(s.home).home).info()
    if gateway is None and not s.falsify:
        raise BusUnavailableError("the agent gateway is not running in this state directory",
                                  hint="ifctl coordinator start --listen HOST:PORT (then add agents)")
    env_path = (out or Path(f"{name}.env")).absolute()
    where = Path(agent_dir) if agent_dir else env_path.parent
    ca_path, token_path = env_path.parent / f"{name}-ca.pem", env_path.parent / f"{name}.token"
    ca_pem = Path(gateway.ca).read_bytes() if gateway is not None and gateway.ca else None
    for path in (env_path, ca_path, token_path):
        if path.exists():
            raise ConfigurationError(f"{path} exists already: nothing was written",
                                     hint="pick another --out, or remove it first")

    async def go(fleet: Fleet) -> Outcome:
        tokens = AgentTokens(fleet)
        if s.falsify:
            known = await fleet.coordinator.get_swarm(swarm_id) is not None
            taken = await tokens.names.exists(name)
            return falsify_report([
                await bus_check(fleet.bus),
                Check("agent gateway running", gateway is not None, gateway.url if gateway else
                      "not running: ifctl coordinator start --listen HOST:PORT"),
                Check(f"swarm {swarm_id}", known or bool(caps), "registered" if known else
                      "would be registered with --cap" if caps else "not registered (give --cap)"),
                Check(f"name {name}", not taken, "in use" if taken else "free")],
                summary=f"would write {env_path}, {ca_path} and {token_path}")
        assert gateway is not None
        env_path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(env_path.parent, os.W_OK):
            raise ConfigurationError(f"--out {env_path}: cannot write in {env_path.parent}")
        if caps:
            await fleet.register_swarm(swarm_id, caps)
        secret, record = await tokens.issue(swarm_id, name=name, by=actor)
        ca = ca_pem
        q = shlex.quote
        env = [f"# InfraFabric: agent {name} acts as swarm {swarm_id} through the gateway at {gateway.url}.",
               f"# Put {env_path.name}, {token_path.name}" + (f" and {ca_path.name}" if ca else "")
               + f" in {where} on the agent machine, then: . {where / env_path.name}",
               f"export IF_BUS_URL={q(gateway.url)}",
               f"export IF_AGENT_TOKEN_FILE={q(str(where / token_path.name))}",
               *([f"export IF_BUS_TLS_CA={q(str(where / ca_path.name))}"] if ca else []),
               f"export IF_SWARM_ID={q(swarm_id)}"]
        try:
            write_private(token_path, secret.encode() + b"\n")
            if ca:
                write_private(ca_path, ca)
            write_private(env_path, ("\n".join(env) + "\n").encode())
        except OSError as exc:  # no live token without its files: revoke it, then say why
            await tokens.revoke(name, by=actor)
            raise ConfigurationError(f"--out {env_path}: cannot write the agent's files ({exc.strerror}); "
                                     f"the token issued for {name} was revoked") from exc
        return Outcome(data={"name": record.name, "swarm_id": swarm_id, "gateway": gateway.url,
                             "env_file": str(env_path), "token_file": str(token_path),
                             "ca_file": str(ca_path) if ca else None},
                       lines=[f"agent {name} acts as {swarm_id} through {gateway.url}",
                              f"wrote {env_path}, {token_path}" + (f", {ca_path}" if ca else ""),
                              f"on the agent machine, with the files in {where}: "
                              f". {where / env_path.name} && ifctl task next --wait 30"],
                       why=["the token is bound to one swarm; the gateway acts as that swarm and no tool "
                            "takes a swarm id",
                            "only the token's hash is on the bus; the token file is 0600"])

    return with_fleet(go)


@coordinator.command("revoke-agent")
@click.argument("name", type=ID)
@click.option("--by", metavar="NAME", help="Who revokes it [default: $USER].")
@contract
def revoke_agent(name: str, by: str | None) -> Outcome:
    """End an agent added with add-agent: its token is refused from the next request on (witnessed).

    Example: ifctl coordinator revoke-agent laptop-7
    """
    return revoke_token(name, by, noun="agent")
