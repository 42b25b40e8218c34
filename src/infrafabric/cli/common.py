"""Helpers shared by the commands that work on the bus: the assembled fleet
for one command, and the ``--mode=falsify`` report."""

from __future__ import annotations

import getpass
import os
import re
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.markup import escape

from infrafabric.bus import EventBus, connect
from infrafabric.cli.app import EXIT_REFUSED, Outcome, run_async, settings
from infrafabric.errors import ConfigurationError

if TYPE_CHECKING:
    from infrafabric.fleet import Fleet

__all__ = ["ID", "READ_ONLY", "Check", "bus_check", "falsify_report", "run_protocol", "with_fleet"]

#: the falsify summary of a command that only reads
READ_ONLY = "read-only: nothing would change"

T = TypeVar("T")


def run_protocol(main: Callable[[list[str]], int], args: tuple[str, ...]) -> None:
    """Run a protocol command (a hook a client runs: it reads the client's
    payload and answers in the client's format, outside the CLI contract)
    with the root options ``--home``/``--bus`` passed on, and exit with its code."""
    s = settings()
    if s.home:
        os.environ["IF_HOME"] = s.home
    if s.bus:
        os.environ["IF_BUS_URL"] = s.bus
    sys.exit(main(list(args)))


def with_fleet(fn: Callable[[Fleet], Awaitable[T]], *, watch: bool = False,
               lease_ttl: float | None = None, sandbox: object | None = None) -> T:
    """Run ``fn`` with the fleet assembled on the configured bus
    (:func:`infrafabric.fleet.assemble`: the coordinator governed, every part
    witnessed with this command's trace id, checkpoints signed with the state
    directory's key), so ``--trace`` lists what the command wrote. ``watch``
    runs the coordinator's watcher (commands that wait for pushes);
    ``lease_ttl`` is the lease of claims the command makes."""
    from infrafabric.coordinator import DEFAULT_LEASE_TTL
    from infrafabric.fleet import assemble

    s = settings()
    url = s.bus_url()

    async def main() -> T:
        async with connect(url) as bus:
            fleet = assemble(bus, home=s.home, actor="cli", trace_id=s.trace_id,
                             lease_ttl=lease_ttl or DEFAULT_LEASE_TTL, sandbox=sandbox)
            fleet.witness.written = deque()  # one command: keep every entry it writes, for --trace
            s.written = fleet.witness.written
            try:
                if watch:
                    await fleet.coordinator.start()
                return await fn(fleet)
            finally:
                await fleet.close()

    return run_async(main())


class _Id(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A task or swarm id on the command line: checked before anything connects,
    so ``../../x`` or a 129-character id is bad input (exit 2), not "not found"."""

    name = "ID"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from infrafabric.coordinator.models import TASK_ID_PATTERN

        text = value if isinstance(value, str) else str(value)
        if not re.fullmatch(TASK_ID_PATTERN, text):
            shown = repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
            self.fail(f"{shown} is not an id: 1-128 letters, digits or . _ - : @ + = ~", param, ctx)
        return text


#: the click type of task and swarm ids
ID = _Id()


@dataclass
class Check:
    """One precondition evaluated by ``--mode=falsify``."""

    name: str
    ok: bool
    detail: str = ""


def falsify_report(checks: list[Check], *, summary: str = "") -> Outcome:
    """The falsify outcome: every check, exit 1 if any would make the command fail."""
    failing = [c for c in checks if not c.ok]
    lines = [f"{'ok  ' if c.ok else 'FAIL'} {escape(c.name)}" + (f": {escape(c.detail)}" if c.detail else "")
             for c in checks]
    if summary:
        lines.append(escape(summary))
    return Outcome(
        data={"mode": "falsify", "would_fail": bool(failing),
              "problems": [f"{c.name}: {c.detail}" if c.detail else c.name for c in failing],
              "checks": [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks]},
        lines=lines, why=lines, exit_code=EXIT_REFUSED if failing else 0)


async def bus_check(bus: EventBus) -> Check:
    """One round trip to the engine: the bus answers (for ``--mode=falsify``)."""
    health = await bus.health_check()
    return Check("bus reachable", bool(health), health.detail or "")


_RELATIVE = re.compile(r"^([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*([smhdw])$")
_EPOCH = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,9})?$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | None, flag: str, now: float) -> float | None:
    """Epoch seconds, ISO 8601 (local time unless it has an offset) or an age
    like ``90m``, ``2h``, ``7d`` (that long ago)."""
    if text is None:
        return None
    value = text.strip()
    rel = _RELATIVE.match(value)
    if rel:
        return now - float(rel.group(1)) * _UNIT[rel.group(2)]
    if _EPOCH.match(value):  # plain digits only: nan, inf and 1e308 are not times
        return float(value)
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise ConfigurationError(f"{flag} {text!r} is not a time: give epoch seconds, ISO 8601 "
                                 "(2025-01-31T12:00) or an age (90m, 2h, 7d)") from exc


def current_user() -> str | None:
    """``$USER``, else ``$LOGNAME``, else the login name from the password database."""
    name = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for this uid
            return None
    return name.strip() or None


def who(by: str | None) -> str:
    """Who is acting: ``--by``, else the current user; an unattributed change is refused."""
    name = by.strip() if by is not None else current_user()
    if not name:
        raise ConfigurationError("--by NAME is required (it is empty, or the current user is unknown): "
                                 "a manual change must say who made it")
    return name


def via_gateway(tool: str, arguments: dict[str, Any], swarm_id: str,
                lines: Callable[[Any], list[str]], exit_code: Callable[[Any], int] = lambda _: 0,
                ) -> Outcome | None:
    """On an agent machine, whose IF_BUS_URL is an agent gateway, the command
    as the gateway's ``tool``: it acts as the swarm the agent's token is
    bound to, so a ``swarm_id`` other than the machine's (``IF_SWARM_ID``)
    is bad input. None on a machine with a bus."""
    from infrafabric.agent.control import is_gateway  # light: the gateway's client is loaded only for one

    s = settings()
    if not is_gateway(s.bus):
        return None
    from infrafabric.agent.remote import Remote

    assert s.bus is not None
    remote = Remote.from_env(s.bus)
    own = os.environ.get("IF_SWARM_ID")
    if own and swarm_id != own:
        raise ConfigurationError(f"--swarm {swarm_id}: this machine's agent token acts as {own}, and only as "
                                 "it", hint=f"drop --swarm (IF_SWARM_ID={own} is used), or ask the operator "
                                            "for an agent of that swarm")
    why = [f"through the agent gateway {remote.url}: it acts as the swarm this machine's token is bound to "
           f"({own or 'see the answer'}), and no other"]
    if s.falsify:
        return falsify_report([Check("agent gateway", True, f"would call {tool} at {remote.url}")],
                              summary="changes nothing")
    data = run_async(remote.call(tool, arguments))
    return Outcome(data=data, lines=lines(data), why=why, exit_code=exit_code(data))


def tls_options(applies: str = "", cert_help: str = "serve HTTPS with this PEM certificate (chain); with "
                "--tls-key.") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--tls-cert FILE`` and ``--tls-key FILE`` (checked by
    :func:`infrafabric.serving.server_tls`), for a command that serves HTTPS;
    ``applies``: the option they go with (``"--http: "``)."""
    from pathlib import Path

    def say(text: str) -> str:
        return applies + text if applies else text[:1].upper() + text[1:]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                          help=say("the certificate's PEM private key."))(fn)
        return click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help=say(cert_help))(fn)

    return decorate
