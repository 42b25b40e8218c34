"""The ``ifctl`` / ``if`` command line. Every command is a thin layer over the library.

Each top-level group is imported when it is first used (see
:class:`~infrafabric.cli.app.IfGroup`): a command loads only what it needs.
"""

from __future__ import annotations

from infrafabric.cli.app import cli

cli.lazy.update({
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
})

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ifctl")
