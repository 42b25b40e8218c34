"""``ifctl demo``: a short live demonstration on the embedded default."""

from __future__ import annotations

import click
from rich.table import Table

from infrafabric.bus.embedded import Embedded
from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, run_async, settings
from infrafabric.demo.run import run_demo


@click.command()
@click.option("--agents", type=click.IntRange(2, 32), default=3, show_default=True,
              help="Agent processes to start.")
@click.option("--tasks", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Tasks to push to the agents.")
@contract
def demo(agents: int, tasks: int) -> Outcome:
    """Start agent processes, push tasks to all of them, and show that each task
    is claimed by exactly one agent (one compare-and-swap on the bus), with the
    push and claim latencies.

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
            url, agents=agents, tasks=tasks,
            progress=(lambda _: None) if s.json else (lambda m: s.console.print(f"  {m}")),
        ))
    finally:
        if started_here:
            embedded.stop()
    data = report.as_dict()
    ok = not report.double_owners and len(report.owners) == tasks
    table = Table(title="who won what")
    table.add_column("agent")
    table.add_column("tasks won", justify="right")
    for agent, won in sorted(data["tasks_per_agent"].items()):
        table.add_row(agent, str(won))
    if not s.json:
        s.console.print(table)
    lines = [
        f"{tasks} tasks pushed to {agents} agent processes; {len(report.owners)} claimed, "
        f"each by exactly one agent" if ok else f"FAILED: double owners {report.double_owners}",
        f"claims won {report.claims_won}, refused at once {report.claims_lost}",
        f"push latency (publish -> agent, across processes) ms: {data['push_latency_ms']}",
        f"claim latency (one CAS round trip) ms: {data['claim_latency_ms']}",
        f"done in {data['seconds']} s" + ("; embedded coordinator stopped" if started_here else ""),
    ]
    return Outcome(
        data=data, lines=lines,
        why=["every agent receives every task by push (no polling) and tries bus.create(claims/T)",
             "create succeeds for exactly one caller; the rest get None at once",
             "the stored claims are read back and compared with the reported winners"],
        exit_code=0 if ok else EXIT_REFUSED,
    )
