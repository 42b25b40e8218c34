"""``ifctl mcp`` (serve an agent session over MCP), ``ifctl mcp config`` (each
client's registration), ``ifctl hook`` and ``ifctl hooks install`` (lifecycle hooks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from infrafabric.bus.url import parse_url
from infrafabric.cli.app import Outcome, contract, settings
from infrafabric.cli.common import (
    ID,
    Check,
    bus_check,
    falsify_report,
    run_protocol,
    tls_options,
    who,
    with_fleet,
)
from infrafabric.coordinator.models import CAPABILITY_PATTERN
from infrafabric.errors import ConfigurationError

if TYPE_CHECKING:
    from infrafabric.fleet import Fleet

MCP_EXTRA = "pip install 'infrafabric[mcp]'"
SWARM_ENV = "IF_SWARM_ID"
CAPS_ENV = "IF_CAPABILITIES"
AGENTS = ("claude", "codex", "cursor", "gemini")
HOOK_AGENTS = ("claude", "codex", "cursor")


def require_mcp() -> None:
    """Exit 2 with the install command when the ``mcp`` extra is missing."""
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError("`ifctl mcp` needs the MCP SDK (the `mcp` package), which is not installed",
                                 hint=MCP_EXTRA) from exc


def identity(swarm_id: str | None, caps: tuple[str, ...]) -> tuple[str, list[str] | None]:
    """The serving swarm and its capabilities, from the flags or the environment."""
    swarm = swarm_id or os.environ.get(SWARM_ENV, "").strip()
    if not swarm:
        raise ConfigurationError(f"no swarm id: pass --swarm ID or set ${SWARM_ENV}",
                                 hint="ifctl mcp --swarm session-7 --cap code:python")
    if swarm_id is None:
        try:
            ID.convert(swarm, None, None)
        except click.BadParameter as exc:
            raise ConfigurationError(f"${SWARM_ENV}: {exc.message}") from exc
    listed = list(caps)
    if not listed and os.environ.get(CAPS_ENV, "").strip():
        listed = [c.strip() for c in os.environ[CAPS_ENV].split(",") if c.strip()]
        check_caps(listed, f"${CAPS_ENV}")
    check_caps(listed)
    return swarm, (listed or None)


def check_caps(caps: tuple[str, ...] | list[str], source: str = "--cap") -> None:
    for cap in caps:
        if re.fullmatch(CAPABILITY_PATTERN, cap) is None:
            raise ConfigurationError(f"{source}: {cap[:60]!r} is not a capability (lowercase words, "
                                     "optionally domain:skill, e.g. code:python)")


def ifctl_command() -> str:
    """How a client should start this ifctl: ``ifctl`` when that is the one on
    PATH, else this one's absolute path (a virtualenv not on the client's PATH)."""
    here = Path(sys.argv[0]).absolute() if sys.argv and Path(sys.argv[0]).name in ("ifctl", "if") else None
    if here is None:
        here = Path(sys.executable).parent / "ifctl"
    found = shutil.which("ifctl")
    if found is not None and here.exists() and Path(found).resolve() == here.resolve():
        return "ifctl"
    return str(here)


@click.group(invoke_without_command=True)
@click.option("--swarm", "swarm_id", type=ID, metavar="ID",
              help=f"The swarm this agent acts as [env: {SWARM_ENV}].")
@click.option("--cap", "caps", multiple=True, metavar="CAP",
              help=f"A capability it offers (repeatable) [env: {CAPS_ENV}, comma-separated]. Without any, "
                   "a registered swarm keeps its own.")
@click.option("--lease", "lease_ttl", type=click.FloatRange(min=1, max=86400), default=600, show_default=True,
              help="Seconds a claim lasts without activity (a tool call, or a tool use with the hooks).")
@click.option("--http", "http", is_flag=True,
              help="Serve many remote agents over streamable HTTP at /mcp instead, each acting as the swarm "
                   "its bearer token is bound to (`ifctl mcp token issue`).")
@click.option("--host", default="127.0.0.1", show_default=True, help="--http: the address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True,
              help="--http: the port (0: any free one).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="--http: a name agents reach it by (a proxy's, this machine's) besides --host and "
                   "loopback (repeatable); requests for any other Host are refused (DNS rebinding).")
@tls_options("--http: ")
@click.option("--allow-plain-http", is_flag=True,
              help="--http: allow a --host beyond loopback without TLS, where tokens cross the network in "
                   "clear text (give --tls-cert/--tls-key, or put a TLS proxy in front, instead).")
@click.pass_context
def mcp(ctx: click.Context, swarm_id: str | None, caps: tuple[str, ...], lease_ttl: float, http: bool,
        host: str, port: int, allow_hosts: tuple[str, ...], tls_cert: Path | None, tls_key: Path | None,
        allow_plain_http: bool) -> None:
    """Serve the fleet to one agent session over MCP (stdio), or to remote agents (--http).

    The agent's client starts it (`ifctl mcp config` prints the line that
    registers it). It registers the swarm, keeps it present on the bus while
    connected, and gives the agent the tools task_next, task_heartbeat,
    task_complete, task_fail, task_release, task_block, board_status,
    budget_status and cost_track, and the resources infrafabric://board and
    infrafabric://task/{id}. Every call is governed and witnessed exactly as
    the same command from ifctl. A claim lasts --lease seconds without
    activity: if the session dies, its task goes back to the fleet then.

    stdout carries the protocol; messages go to stderr. Uses IF_BUS_URL if
    set; otherwise this project's embedded coordinator (started if needed).
    On an agent machine whose IF_BUS_URL is an agent gateway (https://, from
    `ifctl coordinator add-agent`), it serves the gateway's tools instead,
    acting as the swarm the agent's token is bound to.

    With --http it serves remote agents instead: one server, each request
    acting as the swarm its bearer token is bound to (tokens are issued and
    revoked with `ifctl mcp token`, kept only hashed on the bus). It listens
    on loopback unless --host says otherwise.

    \b
    Examples:
      ifctl mcp --swarm session-7 --cap code:python --cap docs:markdown
      IF_SWARM_ID=session-7 IF_CAPABILITIES=code:python ifctl mcp
      ifctl mcp config --agent claude --swarm session-7 --cap code:python
      ifctl mcp --http --port 8766    # then: ifctl mcp token issue session-9
    """
    if ctx.invoked_subcommand is not None:
        return
    require_mcp()
    s = settings()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="ifctl mcp: %(message)s")
    library = logging.getLogger("infrafabric")
    library.setLevel(logging.INFO)
    for handler in [h for h in library.handlers if getattr(h, "_ifctl", False)]:
        library.removeHandler(handler)  # a server's messages go out once, as "ifctl mcp: ..."
    from infrafabric.agent.remote import Remote, is_gateway

    if is_gateway(s.bus) and not http:
        # an agent machine: the gateway's tools, as the swarm its token is bound to
        from infrafabric.agent.remote import serve_proxy

        assert s.bus is not None
        remote = Remote.from_env(s.bus)
        if caps:
            logging.getLogger("infrafabric").warning(
                "--cap is ignored through the gateway: the operator set this swarm's capabilities")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_proxy(remote))
        return
    if http:
        from infrafabric.agent.http import serve_http
        from infrafabric.serving import check_exposure, server_tls, tune_gc

        if swarm_id or caps:
            raise ConfigurationError("--http serves many agents: each acts as the swarm its token is bound "
                                     "to, so --swarm and --cap do not apply",
                                     hint="ifctl mcp token issue SWARM (then the agent sends it as a bearer "
                                          "token)")
        tls = server_tls(tls_cert, tls_key)
        check_exposure(host, tls=tls is not None, allow_plain_http=allow_plain_http, what="the agent gateway")

        def ready(url: str) -> None:
            tune_gc()  # this process is the server now
            click.echo(f"ifctl mcp: serving agents at {url} (bearer tokens: ifctl mcp token issue SWARM)",
                       err=True)

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_http(s.bus, home=s.home, host=host, port=port, lease_ttl=lease_ttl,
                                   allow_hosts=allow_hosts, tls=tls, on_ready=ready))
        return
    swarm, capabilities = identity(swarm_id, caps)
    from infrafabric.agent.stdio import serve_stdio
    from infrafabric.serving import tune_gc

    tune_gc()  # this process is the server (its modules are loaded: they are frozen with the rest)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_stdio(s.bus, home=s.home, swarm_id=swarm, capabilities=capabilities,
                                lease_ttl=lease_ttl))


@mcp.command("config")
@click.option("--agent", type=click.Choice(AGENTS), required=True, help="The agent's client.")
@click.option("--swarm", "swarm_id", type=ID, metavar="ID",
              help=f"The swarm it acts as [default: ${SWARM_ENV} in the client's environment].")
@click.option("--cap", "caps", multiple=True, metavar="CAP", help="A capability it offers (repeatable).")
@click.option("--name", default="infrafabric", show_default=True, help="The server's name in the client.")
@contract
def mcp_config(agent: str, swarm_id: str | None, caps: tuple[str, ...], name: str) -> Outcome:
    """Print the one line (or file) that registers `ifctl mcp` with an agent's client.

    The server it registers uses this project's board: IF_BUS_URL if set
    here, else this state directory (passed as IF_HOME, so the client may
    start it from any directory).

    \b
    Examples:
      ifctl mcp config --agent claude --swarm session-7 --cap code:python
      ifctl mcp config --agent codex --swarm session-8
      ifctl mcp config --agent cursor --json
    """
    from infrafabric.agent.clients import mcp_registration
    from infrafabric.statedir import state_dir

    check_caps(caps)
    s = settings()
    args = ["mcp"] + (["--swarm", swarm_id] if swarm_id else []) + [a for c in caps for a in ("--cap", c)]
    env: dict[str, str] = {}
    notes: list[str] = []
    from infrafabric.agent.remote import Remote, is_gateway

    if is_gateway(s.bus):
        # an agent machine: the server proxies the gateway; the token's file is named, never its value
        assert s.bus is not None
        Remote.from_env(s.bus)
        env["IF_BUS_URL"] = s.bus
        for var in ("IF_AGENT_TOKEN_FILE", "IF_BUS_TLS_CA", SWARM_ENV):
            if os.environ.get(var):
                env[var] = str(Path(os.environ[var]).absolute()) if var != SWARM_ENV else os.environ[var]
        if "IF_AGENT_TOKEN_FILE" not in env:
            notes.append("the token is not written here: give the client IF_AGENT_TOKEN_FILE "
                         "(or IF_AGENT_TOKEN)")
    elif s.bus:
        parse_url(s.bus)  # a URL with credentials in it is refused here, never written
        env["IF_BUS_URL"] = s.bus
    else:
        env["IF_HOME"] = str(state_dir(s.home))
    reg = mcp_registration(agent, name=name, command=ifctl_command(), args=args, env=env)
    reg.notes = notes + reg.notes
    if swarm_id is None:
        reg.notes.append(f"start each agent with {SWARM_ENV}=<its swarm id> in its environment")
    if s.falsify:  # it writes nothing anyway: report what it would print
        return falsify_report([Check("arguments", True, f"{agent}, server {name!r}"),
                               Check("board", True, f"IF_BUS_URL {s.bus}" if s.bus
                                     else f"IF_HOME {env['IF_HOME']}")],
                              summary=f"would print the {agent} registration")
    return Outcome(data=reg.as_dict(), lines=[escape(line) for line in reg.lines()])


@click.command("hook", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                         "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def hook(args: tuple[str, ...]) -> None:
    """Run by an agent's client as a lifecycle hook (see `ifctl hooks install`).

    \b
    Usage: ifctl hook AGENT EVENT [--swarm ID]
      claude: session-start, post-tool-use, stop, teammate-idle
      codex:  session-start, post-tool-use, stop
      cursor: session-start, post-tool-use, after-file-edit, stop
    """
    from infrafabric.agent.hooks import main as run_hook

    run_protocol(run_hook, args)


@click.group()
def hooks() -> None:
    """Install the lifecycle hooks that keep an agent's lease alive and its work going.

    \b
    Examples:
      ifctl hooks install --agent claude
      ifctl hooks install --agent codex --user
      ifctl hooks install --agent cursor --mode falsify   # show what would be written
    """


@hooks.command("install")
@click.option("--agent", type=click.Choice(HOOK_AGENTS), required=True, help="The agent's client.")
@click.option("--project/--user", "project", default=True, show_default=True,
              help="Write the project's hook file (shared by everyone on it) or your own.")
@click.option("--swarm", "swarm_id", type=ID, metavar="ID",
              help=f"Bake this swarm id into the hooks [default: ${SWARM_ENV} of each agent session].")
@contract
def hooks_install(agent: str, project: bool, swarm_id: str | None) -> Outcome:
    """Write the client's hook configuration, keeping its other hooks.

    \b
    What the hooks do (for an agent started with IF_SWARM_ID set):
      session start   inject the protocol and the task it holds
      after each tool renew the lease of its claim (real activity keeps it)
      stop            refused while it holds a task (complete, fail or
                      release it first); if the board has work for it,
                      the next task is claimed and handed over instead
    A hook reaches the agent's running `ifctl mcp` over a private socket
    (tens of milliseconds), never starts a server, and lets the agent go on
    if the fleet cannot be reached. Installing twice changes nothing.

    \b
    Examples:
      ifctl hooks install --agent claude          # .claude/settings.json of this project
      ifctl hooks install --agent codex --user    # ~/.codex/hooks.json
      IF_SWARM_ID=session-7 claude                # then start each agent as its swarm
    """
    from infrafabric.agent.clients import HOOK_FILES, install_hooks
    from infrafabric.statedir import worktree_root

    s = settings()
    rel = HOOK_FILES[agent][0 if project else 1]
    path = (worktree_root() or Path.cwd()) / rel if project else Path.home() / rel
    # a hook finds the project's board from the agent's working directory; a board named by
    # --home/IF_HOME or --bus/IF_BUS_URL here is written into the hook instead
    where = {"--home": str(Path(s.home).absolute())} if s.home else {}
    from infrafabric.agent.control import is_gateway

    if s.bus:
        if not is_gateway(s.bus):  # a gateway's hooks ask the agent's `ifctl mcp`, or the gateway
            parse_url(s.bus)
        where["--bus"] = s.bus
    if s.falsify:
        try:
            install_hooks(agent, path, ifctl_command(), swarm_id, where=where, write=False)
            checks = [Check(str(path), True, "exists: its other hooks are kept" if path.exists() else
                            "would be created")]
        except ConfigurationError as exc:
            checks = [Check(str(path), False, exc.message)]
        return falsify_report(checks, summary=f"would write the {agent} hooks to {path}")
    config = install_hooks(agent, path, ifctl_command(), swarm_id, where=where)
    lines = [f"wrote the {agent} hooks to {path}"]
    if agent == "codex":
        lines.append("Codex runs a new hook once you trust it: open /hooks in Codex")
    if swarm_id is None:
        lines.append(f"each agent session acts as ${SWARM_ENV} (start it with {SWARM_ENV}=session-N)")
    return Outcome(data={"agent": agent, "path": str(path), "config": config},
                   lines=lines)


@mcp.group("token")
def token() -> None:
    """Issue, list and revoke the bearer tokens of `ifctl mcp --http`.

    A token is bound to one swarm: a request carrying it acts as that swarm
    and no other. It is shown once; the bus keeps only its SHA-256.

    \b
    Examples:
      ifctl mcp token issue session-9 --name laptop-9
      ifctl mcp token list
      ifctl mcp token revoke laptop-9
    """


@token.command("issue")
@click.argument("swarm_id", type=ID)
@click.option("--name", type=ID, metavar="NAME", help="What to call it (for list and revoke) [default: "
              "SWARM-<random>].")
@click.option("--by", metavar="NAME", help="Who issues it [default: $USER].")
@contract
def token_issue(swarm_id: str, name: str | None, by: str | None) -> Outcome:
    """Issue a token that acts as SWARM_ID (printed once; witnessed).

    Example: ifctl mcp token issue session-9 --name laptop-9
    """
    from infrafabric.agent.tokens import AgentTokens

    s = settings()
    actor = who(by)

    async def go(fleet: Fleet) -> Outcome:
        tokens = AgentTokens(fleet)
        if s.falsify:
            known = await fleet.coordinator.get_swarm(swarm_id) is not None
            checks = [await bus_check(fleet.bus),
                      Check(f"swarm {swarm_id}", known, "registered" if known else "not registered")]
            if name is not None:
                taken = await tokens.names.exists(name)
                checks.append(Check(f"name {name}", not taken, "in use" if taken else "free"))
            return falsify_report(checks, summary=f"would issue a token acting as {swarm_id}")
        secret, record = await tokens.issue(swarm_id, name=name, by=actor)
        return Outcome(data={"token": secret, "name": record.name, "swarm_id": swarm_id},
                       lines=[secret, f"# token {record.name} acts as {swarm_id}; it is shown only now",
                              "# the agent sends it as: Authorization: Bearer <token>"])

    return with_fleet(go)


@token.command("list")
@contract
def token_list() -> Outcome:
    """List the agent tokens (never the tokens themselves).

    Example: ifctl mcp token list --json
    """
    from infrafabric.agent.tokens import AgentTokens, describe

    s = settings()

    async def go(fleet: Fleet) -> Outcome:
        if s.falsify:
            return falsify_report([await bus_check(fleet.bus)], summary="reads the tokens' records")
        tokens = [describe(t) for t in await AgentTokens(fleet).list()]
        lines = [f"{t['name']}: acts as {t['swarm_id']}" + (" (revoked)" if t["revoked"] else "")
                 for t in tokens] or ["no agent tokens"]
        return Outcome(data={"tokens": tokens}, lines=lines)

    return with_fleet(go)


@token.command("revoke")
@click.argument("name", type=ID)
@click.option("--by", metavar="NAME", help="Who revokes it [default: $USER].")
@contract
def token_revoke(name: str, by: str | None) -> Outcome:
    """Revoke a token: refused from the next request on (witnessed).

    Example: ifctl mcp token revoke laptop-9
    """
    return revoke_token(name, by, noun="token")


def revoke_token(name: str, by: str | None, *, noun: str) -> Outcome:
    """Revoke the agent token ``name`` (``ifctl mcp token revoke``, ``ifctl
    coordinator revoke-agent``): refused from its next request on; witnessed."""
    from infrafabric.agent.tokens import AgentTokens

    s = settings()
    actor = who(by)

    async def go(fleet: Fleet) -> Outcome:
        tokens = AgentTokens(fleet)
        if s.falsify:
            found = await tokens.names.exists(name)
            return falsify_report([await bus_check(fleet.bus),
                                   Check(f"{noun} {name}", found, "exists" if found else f"no such {noun}")],
                                  summary=f"would revoke {name}")
        record, now = await tokens.revoke(name, by=actor)
        return Outcome(data={"name": name, "swarm_id": record.swarm_id, "revoked": True, "already": not now},
                       lines=[f"revoked {noun} {name} (it acted as {record.swarm_id}): refused from its next "
                              "request" if now else f"{noun} {name} was revoked already (it acted as "
                                                    f"{record.swarm_id})"])

    return with_fleet(go)
