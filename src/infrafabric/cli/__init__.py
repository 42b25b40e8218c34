"""The ``ifctl`` / ``if`` command line. Every command is a thin layer over the library.

Each top-level group is imported when it is first used (see
:class:`~infrafabric.cli.app.IfGroup`): a command loads only what it needs.
``ifctl hook ...``, run by an agent's client after every tool use, goes
straight to :mod:`infrafabric.agent.hooks` without loading the command line
at all; ``ifctl task heartbeat`` asks the swarm's running server, or the connection
an earlier heartbeat left, when there is one (:mod:`infrafabric.cli.fast`).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs the hooks' start-up ~15 ms

if TYPE_CHECKING:
    from infrafabric.cli.app import IfGroup

__all__ = ["cli", "main"]

#: name -> (``module:attribute``, the group's one-line summary). The summaries are
#: here, not read off the groups, so that ``ifctl --help`` lists every group
#: without importing any (tests/test_startup.py checks they match).
_COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("infrafabric.cli.bench:bench",
              "Benchmarks: latency and throughput, reported (never asserted)."),
    "coordinator": ("infrafabric.cli.coordinator:coordinator",
                    "Manage the embedded local coordinator (a durable nats-server in the state directory)."),
    "task": ("infrafabric.cli.board:task", "Create, claim, renew, release, complete and fail tasks."),
    "board": ("infrafabric.cli.board:board", "Import, show and export the task board."),
    "swarm": ("infrafabric.cli.board:swarm", "Register swarms and list them."),
    "blocker": ("infrafabric.cli.board:blocker", "Report blockers to the orchestrator."),
    "events": ("infrafabric.cli.board:events", "Watch the board's transitions live."),
    "witness": ("infrafabric.cli.witness:witness",
                "The tamper-evident audit chain: verify it, sign checkpoints, query it."),
    "governor": ("infrafabric.cli.governor:governor",
                 "Swarm profiles, capability matching, budgets, circuit breakers and policy."),
    "cost": ("infrafabric.cli.cost:cost",
             "What the fleet spends: the cost ledger, budgets, debits (alias: optimise)."),
    # the seeds' name for cost tracking
    "optimise": ("infrafabric.cli.cost:cost",
                 "What the fleet spends: the cost ledger, budgets, debits (alias: optimise)."),
    "demo": ("infrafabric.cli.demo:demo",
             "The seeds' Phase 0 board, worked by the seeds' swarms through InfraFabric."),
    # chassis_bus adds load/exec/creds/slo/reputation to the group defined in cli.chassis
    "chassis": ("infrafabric.cli.chassis_bus:chassis",
                "The sandbox: run a swarm's code (WebAssembly, Python or JavaScript) under limits."),
    "web": ("infrafabric.cli.web:web", "Serve the live dashboard and Prometheus /metrics for the bus."),
    "doctor": ("infrafabric.cli.doctor:doctor",
               "Check every record on the bus (tasks, swarms, profiles, budgets, breakers, the policy, "
               "the ledger, credentials, reputation, SLO) and list each one that does not read as its kind: "
               "written by hand, by an older version, or by something that is not InfraFabric."),
    "mcp": ("infrafabric.cli.mcp:mcp",
            "Serve the fleet to one agent session over MCP (stdio), or to remote agents (--http)."),
    "hook": ("infrafabric.cli.mcp:hook",
             "Run by an agent's client as a lifecycle hook (see `ifctl hooks install`)."),
    "hooks": ("infrafabric.cli.mcp:hooks",
              "Install the lifecycle hooks that keep an agent's lease alive and its work going."),
    "guard": ("infrafabric.cli.guard:guard",
              "Refuse commits and edits of what another agent's live claim holds."),
}


def _cli() -> IfGroup:
    from infrafabric.cli.app import cli

    for name, (target, summary) in _COMMANDS.items():
        cli.lazy[name] = target
        cli.summaries[name] = summary
    return cli


def __getattr__(name: str) -> object:
    if name == "cli":
        return _cli()
    raise AttributeError(f"module 'infrafabric.cli' has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] == ["hook"]:  # the hot path: a process per tool use of every agent
        from infrafabric.agent.hooks import main as run_hook

        sys.exit(run_hook(sys.argv[2:]))
    if sys.argv[1:3] == ["task", "heartbeat"]:  # every few minutes of every agent: its server answers
        from infrafabric.cli.fast import heartbeat

        code = heartbeat(sys.argv[3:])
        if code is not None:
            sys.exit(code)
    if sys.argv[1:3] == ["guard", "tool"]:  # a PreToolUse hook: before every tool call of every agent
        from infrafabric.agent.toolguard import main as run_guard

        sys.exit(run_guard(sys.argv[3:]))
    _cli()(prog_name="ifctl")
