"""The ``ifctl`` / ``if`` command line. Every command is a thin layer over the library.

Each top-level group is imported when it is first used (see
:class:`~infrafabric.cli.app.IfGroup`): a command loads only what it needs.
``ifctl hook ...``, run by an agent's client after every tool use, goes
straight to :mod:`infrafabric.agent.hooks` without loading the command line
at all.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs the hooks' start-up ~15 ms

if TYPE_CHECKING:
    from infrafabric.cli.app import IfGroup

__all__ = ["cli", "main"]

_COMMANDS = {
    "bench": "infrafabric.cli.bench:bench",
    "coordinator": "infrafabric.cli.coordinator:coordinator",
    **{name: f"infrafabric.cli.board:{name}" for name in ("task", "board", "swarm", "blocker", "events")},
    "witness": "infrafabric.cli.witness:witness",
    "governor": "infrafabric.cli.governor:governor",
    "cost": "infrafabric.cli.cost:cost",
    "optimise": "infrafabric.cli.cost:cost",  # the seeds' name for cost tracking
    "demo": "infrafabric.cli.demo:demo",
    # chassis_bus adds load/exec/creds/slo/reputation to the group defined in cli.chassis
    "chassis": "infrafabric.cli.chassis_bus:chassis",
    "web": "infrafabric.cli.web:web",
    "doctor": "infrafabric.cli.doctor:doctor",
    "mcp": "infrafabric.cli.mcp:mcp",
    "hook": "infrafabric.cli.mcp:hook",
    "hooks": "infrafabric.cli.mcp:hooks",
    "guard": "infrafabric.cli.guard:guard",
}


def _cli() -> IfGroup:
    from infrafabric.cli.app import cli

    cli.lazy.update(_COMMANDS)
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
    if sys.argv[1:3] == ["guard", "tool"]:  # a PreToolUse hook: before every tool call of every agent
        from infrafabric.agent.toolguard import main as run_guard

        sys.exit(run_guard(sys.argv[3:]))
    _cli()(prog_name="ifctl")
