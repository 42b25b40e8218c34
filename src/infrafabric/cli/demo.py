"""``ifctl demo``: a short live demonstration on the embedded default."""

from __future__ import annotations

import click
from rich.table import Table

from infrafabric.bus.embedded import Embedded
from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, run_async, settings
from infrafabric.demo.run import LEASE, run_demo


@click.command()
@click.option("--agents", type=click.IntRange(2, 32), default=3, show_default=True,
              help="Agent processes to start.")
@click.option("--no-kill", is_flag=True, help="Do not kill an agent mid-task.")
@click.option("--tasks", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Tasks to push to the agents.")
@contract
def demo(agents: int, tasks: int, no_kill: bool) -> Outcome:
    """Agent processes work a task board through the coordinator: each takes
    the best task it can or waits for one to be pushed, holds it with
    heartbeats, completes it (unblocking its dependents); one agent is killed
    with SIGKILL mid-task and its task is reclaimed when the lease lapses.
    Every task must be done exactly once.

    Uses IF_BUS_URL if set; otherwise starts the embedded local coordinator for
    the run and stops it afterwards (if it was not already running).

    Example: ifctl demo --agents 4 --tasks 20
    """
    s = settings()
    if s.falsify:
        return Outcome(data={"mode": "falsify", "would_fail": False},
                       lines=["ok   the demo only needs a bus; it would start the embedded one"])
    embedded = Embedded(s.home)
    started_here = False
    if s.bus:
        url = s.bus
    else:
        info, started_here = embedded.start()
        url = info.url
        if not s.json:
            s.console.print(f"[bold]embedded coordinator[/bold] {url} "
                            f"({'started' if started_here else 'already running'})")
    try:
        report = run_async(run_demo(
            url, agents=agents, tasks=tasks, kill_one=not no_kill,
            progress=(lambda _: None) if s.json else (lambda m: s.console.print(f"  {m}")),
        ))
    finally:
        if started_here:
            embedded.stop()
    data = report.as_dict()
    table = Table(title="who did what")
    table.add_column("agent")
    table.add_column("tasks done", justify="right")
    for agent in report.agents:
        note = " (killed)" if agent == report.killed else ""
        table.add_row(agent + note, str(report.done_by.get(agent, 0)))
    if not s.json:
        s.console.print(table)
    lines = [
        f"{report.completed}/{tasks} tasks done, each exactly once" if report.ok
        else f"[bold red]FAILED[/]: {data}",
        f"claims won {report.claims_won}, refused at once {report.claims_lost} (one CAS each)",
        f"claim latency (CAS + its witness entry) ms: {data['claim_latency_ms']}",
        f"unblocked or lapsed -> claimed again (push + claim, incl. waiting for a free agent) ms: "
        f"{data['available_to_claimed_ms']}",
    ]
    if report.killed:
        lines.append(f"{report.killed} was killed holding {report.killed_task}; "
                     f"its lease lapsed and {report.reclaimed_by} completed it")
    ops = ", ".join(f"{n} {op}" for op, n in sorted(report.witnessed.items()))
    lines.append(f"witness: {report.witness_entries} entries, chain "
                 f"{'verified' if report.witness_ok else '[bold red]BROKEN[/]'} ({ops})")
    explore = f"{report.url}{'&' if '?' in report.url else '?'}namespace={report.namespace}"
    lines.append("explore it: " + ("ifctl coordinator start && " if started_here else "")
                 + f"ifctl --bus '{explore}' board show  (or witness verify)")
    lines.append(f"done in {data['seconds']} s" + ("; embedded coordinator stopped" if started_here else ""))
    return Outcome(
        data=data, lines=lines,
        why=["agents call next_task: claim the best available task, else wait for a push (no polling)",
             "a claim is one compare-and-swap on the task record: exactly one agent wins",
             "completing a task makes its dependents available and pushes them",
             f"a claim lasts {LEASE:g} s unless renewed; a killed agent stops renewing"],
        exit_code=0 if report.ok else EXIT_REFUSED,
    )
