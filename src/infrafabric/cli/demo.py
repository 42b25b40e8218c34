"""``ifctl demo``: the seeds' board worked by the seeds' swarms, live, on the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Group
from rich.live import Live
from rich.markup import escape as escape_markup
from rich.table import Table
from rich.text import Text

from infrafabric.bus import EventBus, connect
from infrafabric.bus.embedded import Embedded
from infrafabric.bus.servers import find_nats_server
from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, run_async, settings
from infrafabric.cli.common import Check, bus_check, falsify_report
from infrafabric.cli.web import DEFAULT_PORT, require_web, serve
from infrafabric.demo.run import BLOCKER_TASK, FLAKY, LEASE, DemoReport, dollars, run_demo
from infrafabric.errors import InfraFabricError


def _view(report: DemoReport) -> Group:
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for column in ("swarm", "state", "task", "done", "failed", "pid"):
        table.add_column(column, justify="right" if column in ("done", "failed", "pid") else "left")
    for v in report.views.values():
        style = "red" if "OPEN" in v.state or "killed" in v.state else (
            "green" if v.state == "working" else "")
        table.add_row(v.swarm, Text(v.state, style=style), v.task, str(v.done), str(v.failed),
                      str(v.pid or ""))
    done = report.completed
    bar = "#" * int(40 * done / max(report.tasks, 1))
    return Group(Text(f"board {done}/{report.tasks} [{bar:<40}]", style="bold"), table,
                 *[Text(f"  {line}", style="dim") for line in report.log[-6:]])


@click.command()
@click.option("--swarms", type=click.IntRange(1, 6), default=6, show_default=True,
              help="How many of the seeds' swarms (sessions 1-5 and 7) to start, besides flaky-agent.")
@click.option("--tasks", type=click.IntRange(1, 1000), default=None,
              help="Import only the first M tasks of the seed board (in dependency order) [default: all].")
@click.option("--no-kill", is_flag=True, help="Do not kill an agent mid-task.")
@click.option("--web", "with_web", is_flag=True,
              help="Serve the live dashboard beside the demo (needs the web extra); it stays up "
                   "after the demo until Ctrl-C when run from a terminal.")
@click.option("--web-port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="The dashboard's port with --web (0: any free one).")
@click.option("--via", type=click.Choice(["processes", "mcp"]), default="processes", show_default=True,
              help="mcp: a small project worked by agents that are MCP clients, each starting its own "
                   "`ifctl mcp` as Claude Code, Codex or Cursor do (needs the mcp extra).")
@contract
def demo(swarms: int, tasks: int | None, no_kill: bool, with_web: bool, web_port: int, via: str) -> Outcome:
    """The seeds' Phase 0 board, worked by the seeds' swarms through InfraFabric.

    Imports the seed task board; registers the seeds' swarms (sessions 1-5 and
    7) with capabilities, costs, budgets and models, plus flaky-agent; starts
    each as its own OS process. Agents take pushed tasks (next_task, no
    polling), run a task module in the chassis sandbox, pay for it, hold a
    lease with heartbeats and complete the task. Session 7 hits a blocker and
    the governor sends helpers; flaky-agent keeps failing in the sandbox until
    its circuit breaker opens; one agent is killed with SIGKILL mid-task and
    its task is reclaimed when its lease lapses. Ends with a summary drawn
    from the bus. The state stays for you to explore (ifctl board show,
    ifctl cost report, ifctl witness verify); running the demo again replaces
    what the previous demo left, and never touches other work.

    Uses IF_BUS_URL if set; otherwise the embedded local coordinator.

    With --via mcp, three agents work a small project through the interface
    real agents use: each is an MCP client that starts its own `ifctl mcp`
    and calls task_next, task_heartbeat and task_complete; one tries to stop
    while holding a task and its Stop hook refuses; one session dies
    mid-task and another agent takes the task over with its progress note.

    \b
    Examples:
      ifctl demo
      ifctl demo --web            # and open the printed address in a browser
      ifctl demo --swarms 3 --tasks 20 --json
      ifctl demo --via mcp
    """
    s = settings()
    if via == "mcp" and not s.falsify:
        return _mcp_demo(Embedded(s.home))
    if with_web:
        require_web()
    embedded = Embedded(s.home)
    if s.falsify:
        from infrafabric.chassis import Sandbox

        checks = []
        if s.bus:
            async def reach() -> Check:
                async with connect(s.bus) as bus:
                    return await bus_check(bus)

            try:
                checks.append(run_async(reach()))
            except InfraFabricError as exc:
                checks.append(Check("bus reachable", False, exc.message))
        else:
            try:
                checks.append(Check("nats-server binary", True, find_nats_server()))
            except InfraFabricError as exc:
                checks.append(Check("nats-server binary", False, exc.message))
            checks.append(Check("state directory", True, f"{embedded.home} (embedded server)"))
        from infrafabric.demo.agent import TASK_WAT

        try:
            with tempfile.TemporaryDirectory() as tmp, Sandbox(cache_dir=Path(tmp)) as sb:  # no cache write
                sb.compile(TASK_WAT, name="demo")
            checks.append(Check("task module compiles", True, "wasmtime"))
        except InfraFabricError as exc:
            checks.append(Check("task module compiles", False, exc.message))
        return falsify_report(checks)
    url, started_here = _demo_bus(embedded)

    token = secrets.token_urlsafe(24) if with_web else None

    def dashboard_ready(base: str) -> None:
        s.err.print(f"[bold]dashboard[/bold] {base}  (metrics {base}metrics)\n"
                    f"  operator token for its actions (reset a breaker): {token}")

    async def run(bus: EventBus) -> DemoReport:
        if s.json or not s.console.is_terminal:
            printed = 0

            def plain(r: DemoReport) -> None:
                nonlocal printed
                if not s.json:
                    for line in r.log[printed:]:
                        s.console.print(f"  {line}")
                printed = len(r.log)

            return await run_demo(bus, url, tasks=tasks, swarms=swarms, kill_one=not no_kill, home=s.home,
                                  on_change=plain)
        with Live(console=s.console, refresh_per_second=8, transient=False) as live:
            return await run_demo(bus, url, tasks=tasks, swarms=swarms, kill_one=not no_kill, home=s.home,
                                  on_change=lambda r: live.update(_view(r)))

    async def go() -> DemoReport:
        async with connect(url) as bus:
            if not with_web:
                return await run(bus)
            async with serve(bus, port=web_port, token=token, on_ready=dashboard_ready,
                             home=s.home) as served:
                report = await run(bus)
                if sys.stdin.isatty() and not s.json:
                    s.err.print(f"demo finished; the dashboard stays at {served.url} until Ctrl-C")
                    with contextlib.suppress(asyncio.CancelledError):
                        await served.done
                return report

    try:
        report = run_async(go())
    finally:
        if started_here:
            embedded.stop()
    data = report.as_dict()
    claims, push = data["claim_latency_ms"], data["push_to_claim_ms"]
    total = data["total_spend_micros"]
    lines = [
        (f"[bold green]{report.completed}/{report.tasks} tasks done, each exactly once[/]" if report.ok
         else f"[bold red]FAILED[/]: {report.completed}/{report.tasks} done, "
              f"none twice: {report.exactly_once}"),
        f"claims: {report.claims_won} won, {report.claims_refused} refused at once "
        "(one compare-and-swap each)",
        f"claim latency ms (next_task: ready index, governed CAS, witness entry): p50 {claims.get('p50')} "
        f"p95 {claims.get('p95')} p99 {claims.get('p99')}",
        f"available -> claimed by an idle agent, ms (push + claim): p50 {push.get('p50')} "
        f"p95 {push.get('p95')} p99 {push.get('p99')} (n={push.get('n', 0)})",
        "spend: " + ", ".join(f"{sid} {dollars(m)}" for sid, m in data["spend_micros"].items() if m)
        + f"; total {dollars(total)}, waste {data['waste']:.1%} (failed attempts)",
        "done by: " + ", ".join(f"{sid} {n}" for sid, n in data["done_by"].items() if n),
        f"breakers open: {', '.join(report.breakers_open) or 'none'}"
        + (f" ({FLAKY} failed in the sandbox 3 times in a row)" if FLAKY in report.breakers_open else ""),
        f"blocker on {BLOCKER_TASK}: helpers {', '.join(report.blocker_helpers) or 'none'}",
    ]
    if report.killed:
        lines.append(f"{report.killed} was killed holding {report.killed_task}; its lease ({LEASE:g} s) "
                     f"lapsed and {report.reclaimed_by or 'nobody'} completed it")
    lines.append(f"witness: {report.witness_entries} entries, chain "
                 f"{'verified' if report.witness_ok else '[bold red]BROKEN[/]'}")
    lines.append(f"done in {data['seconds']} s. Explore: ifctl board show | ifctl cost report | "
                 f"ifctl witness verify | ifctl governor status")
    return Outcome(data=data, lines=lines, exit_code=0 if report.ok else EXIT_REFUSED,
                   why=["agents call next_task: claim the best task they qualify for, else wait for a push",
                        "a claim is one compare-and-swap on the task record: exactly one agent wins",
                        "the governor admits claims (breaker closed, budget left, coverage >= 70 %)",
                        f"a claim lasts {LEASE:g} s unless renewed by heartbeats; "
                        "a killed agent stops renewing",
                        "each task's code runs in the chassis sandbox under its contract's limits"])


def _mcp_demo(embedded: Embedded) -> Outcome:
    from infrafabric.cli.mcp import require_mcp
    from infrafabric.demo.mcp import NAMESPACE, run_mcp_demo

    require_mcp()
    s = settings()
    url, _ = _demo_bus(embedded)
    report = run_async(run_mcp_demo(url, on_line=(lambda line: None) if s.json
                                    else (lambda line: s.console.print(f"  {escape_markup(line)}"))))
    lines = [f"[bold]done in {report.duration_s} s[/bold]: {len(report.completed_by)} tasks completed, each "
             "by exactly one agent; spent " + ", ".join(f"{k} {v}" for k, v in report.spent.items()),
             f"explore it: IF_BUS_URL='{report.url}' ifctl board show   (namespace {NAMESPACE})"]
    ok = report.witness.startswith("intact") and len(report.completed_by) > 0
    return Outcome(data=report.as_dict(), lines=lines,
                   why=["each agent is the MCP SDK's stdio client of its own `ifctl mcp --swarm ID`",
                        "claims, heartbeats and completions went through the governed, witnessed fleet",
                        "the killed session's claim lapsed after its lease and was handed over"],
                   exit_code=0 if ok else EXIT_REFUSED)


def _demo_bus(embedded: Embedded) -> tuple[str, bool]:
    """(the demo's bus URL, whether the embedded server was started for it):
    --bus / IF_BUS_URL, else the embedded server, started if needed."""
    s = settings()
    if s.bus:
        return s.bus, False
    info, started_here = embedded.start()
    if not s.json:
        s.console.print(f"[bold]embedded coordinator[/bold] {info.url} "
                        f"({'started' if started_here else 'already running'})")
    return info.url, started_here
