"""The ``ifctl`` (alias ``if``) root command and the CLI contract shared by every command.

Every command takes ``--json``, ``--why``, ``--trace`` and ``--mode=falsify``
(see :func:`contract`), and the root takes ``--bus``/``--home`` (or
``IF_BUS_URL``/``IF_HOME``) and ``--debug``. Exit codes: 0 done, 1 refused or
negative, 2 bad input or usage, 3 the bus cannot be reached, 4 the swarm is
stopped by the governor (breaker open or budget spent).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

# rich and asyncio are imported when a command prints or runs, not at start-up: `ifctl --help`
# and the hot agent commands must start fast (tests/test_startup.py, `ifctl bench startup`)
if TYPE_CHECKING:
    from rich.console import Console

from infrafabric import __version__
from infrafabric.errors import ConfigurationError, InfraFabricError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_STOPPED = 0, 1, 2, 3, 4


@dataclass
class Outcome:
    """What a command reports: data for ``--json``, lines for humans and for ``--why``."""

    data: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    why: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK
    #: the command already wrote its output (a stream or a file body)
    streamed: bool = False


@dataclass
class Settings:
    """Root options, shared with every subcommand through the click context."""

    bus: str | None
    home: str | None
    debug: bool
    json: bool = False
    why: bool = False
    trace: bool = False
    falsify: bool = False
    trace_id: str = field(default_factory=lambda: os.urandom(8).hex())
    #: witness entries this command wrote (shown by --trace)
    written: Sequence[Any] = field(default_factory=list)

    @functools.cached_property
    def console(self) -> Console:
        """stdout, for the command's output."""
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True)

    @functools.cached_property
    def err(self) -> Console:
        """stderr, for warnings and what goes beside a stream."""
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    def bus_url(self) -> str:
        """The bus URL for this command, starting the embedded server if needed
        (never in falsify mode, which changes nothing: exit 3 if it is not running)."""
        from infrafabric.bus import resolve_url

        return resolve_url(self.bus, home=self.home, autostart=not self.falsify)

    def home_origin(self) -> str:
        """Why the state directory is the one it is, for humans: "--home",
        "IF_HOME", "the git repository at /x, shared by its worktrees" or "the
        per-user default: not in a git repository" (see ``describe_state_dir``)."""
        from infrafabric.bus.embedded import describe_state_dir

        # --home and IF_HOME arrive here as one option; the environment tells them apart
        from_env = bool(self.home) and os.environ.get("IF_HOME") == self.home
        return describe_state_dir(None if from_env else self.home)[1]

    def bus_origin(self) -> str:
        """Where this command's bus comes from: "IF_BUS_URL", "--bus", or "the
        embedded server of <state dir> (<why that directory>)"."""
        if self.bus:
            return "IF_BUS_URL" if os.environ.get("IF_BUS_URL") == self.bus else "--bus"
        from infrafabric.bus.embedded import state_dir

        return f"the embedded server of {state_dir(self.home)} ({self.home_origin()})"


def settings() -> Settings:
    obj = click.get_current_context().find_object(Settings)
    if obj is None:  # pragma: no cover - only when a command is invoked without the root
        raise click.UsageError("internal: no settings")
    return obj


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion for a command."""
    import asyncio

    return asyncio.run(coro)


def contract(fn: Callable[..., Outcome]) -> Callable[..., None]:
    """Give a command the contract flags and render the :class:`Outcome` it returns.

    The wrapped function receives its own parameters (without the contract
    flags) and reads them via :func:`settings`; it returns an Outcome.
    """

    @click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
    @click.option("--why", is_flag=True, help="Explain the outcome: checks, scores, policy.")
    @click.option("--trace", is_flag=True, help="Show the witness entries this command wrote.")
    @click.option(
        "--mode",
        type=click.Choice(["normal", "falsify"]),
        default="normal",
        show_default=True,
        help="falsify: change nothing; report every precondition that would make it fail.",
    )
    @functools.wraps(fn)
    def wrapper(as_json: bool, why: bool, trace: bool, mode: str, **kwargs: Any) -> None:
        s = settings()
        s.json, s.why, s.trace, s.falsify = as_json, why, trace, mode == "falsify"
        outcome = fn(**kwargs)
        render(outcome)
        if outcome.exit_code:
            sys.exit(outcome.exit_code)

    return wrapper


def render(outcome: Outcome) -> None:
    s = settings()
    if outcome.streamed:
        # stdout holds the stream (a file body, JSON lines): the reasons and the trace go to stderr
        if s.why and outcome.why:
            s.err.print("[bold]why:[/bold]")
            for line in outcome.why:
                _print(s.err, f"  - {line}")
        if s.trace:
            _print_trace(s, s.err)
        return
    if s.json:
        data = dict(outcome.data)
        if s.why:
            data["why"] = outcome.why
        if s.trace:
            data["trace_id"] = s.trace_id
            data["witness_entries"] = [e.to_dict() for e in s.written]
        data.setdefault("exit_code", outcome.exit_code)
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    for line in outcome.lines:
        _print(s.console, line)
    if s.why and outcome.why:
        s.console.print("[bold]why:[/bold]")
        for line in outcome.why:
            _print(s.console, f"  - {line}")
    if s.trace:
        _print_trace(s, s.console)


#: C0 and C1 control characters (and DEL) but newline and tab: what a terminal would act on
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with every control character a terminal would act on (ESC
    sequences, OSC titles and clipboard writes, BEL, CR, backspace) shown as
    an escape (``\\x1b``) instead: whatever a task title, a reason or a
    guest wrote, printing it cannot drive the operator's terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _print(console: Console, line: str) -> None:
    """Print a line of console markup; one that is not valid markup (text from
    the bus that happens to hold a stray ``[/x]``) is printed as it is.
    Control characters are escaped first (:func:`terminal_safe`)."""
    from rich.errors import MarkupError

    line = terminal_safe(line)
    try:
        console.print(line)
    except MarkupError:
        console.print(line, markup=False)


def _print_trace(s: Settings, console: Console) -> None:
    from rich.markup import escape

    console.print(f"[dim]trace {s.trace_id}: {len(s.written)} witness entries written[/dim]")
    for e in s.written:
        console.print(f"[dim]  #{e.seq} {escape(e.component)} {escape(e.operation)} "
                      f"{escape(json.dumps(e.params, sort_keys=True))}[/dim]")


class IfGroup(click.Group):
    """Root group: turns InfraFabric errors into messages and exit codes, and
    imports each command group only when it is used (``lazy``: name →
    ``module:attribute``), so ``ifctl task claim`` does not pay for loading the
    sandbox, the benchmarks or the dashboard."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}
        #: a lazy group's one-line summary, so that ``--help`` imports none of them
        self.summaries: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's listing, but a group not yet imported is listed by its summary
        (a stand-in command carrying it) instead of being imported for it:
        ``ifctl --help`` stays fast."""
        commands = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                command = (click.Command(name, help=self.summaries[name]) if name in self.summaries
                           else self.get_command(ctx, name))
            if command is not None and not command.hidden:
                commands.append((name, command))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in commands])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except InfraFabricError as exc:
            _fail(ctx, exc, exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            _fail(ctx, exc, EXIT_REFUSED, internal=True)


def _fail(ctx: click.Context, exc: BaseException, code: int, *, internal: bool = False) -> None:
    obj = ctx.find_object(Settings)
    debug = bool(obj and obj.debug) or os.environ.get("IF_DEBUG") == "1"
    if obj is not None and obj.json:
        payload = {"error": str(exc).split("\nhint: ")[0], "type": type(exc).__name__, "exit_code": code}
        hint = getattr(exc, "hint", None)
        if hint:
            payload["hint"] = hint
        if obj.trace:  # what the command wrote before it failed
            payload["trace_id"] = obj.trace_id
            payload["witness_entries"] = [e.to_dict() for e in obj.written]
        click.echo(json.dumps(payload, indent=2, default=str))
    prefix = "internal error" if internal else "error"
    click.echo(terminal_safe(f"{prefix}: {exc}"), err=True)
    if obj is not None and obj.trace and not obj.json:
        _print_trace(obj, obj.err)
    if internal and not debug:
        click.echo("(run with --debug for the traceback; please report it)", err=True)
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    sys.exit(code)


@click.group(cls=IfGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bus", envvar="IF_BUS_URL", metavar="URL",
              help="Bus URL: nats://host:port, etcd://host:port or memory:// "
                   "[env IF_BUS_URL; default: the embedded local server].")
@click.option("--home", envvar="IF_HOME", metavar="DIR",
              help="State directory [env IF_HOME; default: in a git repository "
                   "<common git dir>/infrafabric, shared by its worktrees; "
                   "else ${XDG_STATE_HOME:-~/.local/state}/infrafabric].")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="ifctl")
@click.pass_context
def cli(ctx: click.Context, bus: str | None, home: str | None, debug: bool) -> None:
    """InfraFabric: coordinate a fleet of AI agents through one shared bus.

    `if` is a shell keyword, so in bash/zsh type `ifctl` (or quote it: 'if').

    \b
    Examples:
      ifctl coordinator start          # start the embedded local bus
      ifctl coordinator status --json  # is it healthy?
      ifctl bench bus --backend nats --n 2000 --json
      IF_BUS_URL=etcd://10.0.0.5:2379 ifctl coordinator status

    Exit codes: 0 done, 1 refused or negative, 2 bad input or usage,
    3 the bus cannot be reached, 4 the swarm is stopped by the governor
    (breaker open or budget spent: a human must act).
    """
    if bus is not None and not bus.strip():
        raise ConfigurationError("--bus / IF_BUS_URL is set but empty")
    ctx.obj = Settings(bus=bus or None, home=home, debug=debug)
    _log_to_stderr(debug)


class _SafeFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record))


def _log_to_stderr(debug: bool) -> None:
    """What the library reports on the ``infrafabric`` logger (a skipped
    corrupt record, a replaced one) reaches the terminal as ``warning: ...``
    on stderr, so stdout stays the command's output (``--json`` included)."""
    logger = logging.getLogger("infrafabric")
    if any(getattr(h, "_ifctl", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(levelname)s: %(message)s" if debug else "warning: %(message)s"))
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    handler._ifctl = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
