"""The ``ifctl`` / ``if`` command line. Every command is a thin layer over the library."""

from __future__ import annotations

import infrafabric.cli.chassis_bus  # noqa: F401 - adds load/exec/creds/slo/reputation to the chassis group
from infrafabric.cli.app import cli
from infrafabric.cli.bench import bench
from infrafabric.cli.board import blocker, board, events, swarm, task
from infrafabric.cli.chassis import chassis
from infrafabric.cli.coordinator import coordinator
from infrafabric.cli.cost import cost
from infrafabric.cli.demo import demo
from infrafabric.cli.governor import governor
from infrafabric.cli.web import web
from infrafabric.cli.witness import witness

cli.add_command(bench)
cli.add_command(coordinator)
for _group in (task, board, swarm, blocker, events, witness):
    cli.add_command(_group)
cli.add_command(governor)
cli.add_command(cost)
cli.add_command(cost, name="optimise")  # the seeds' name for cost tracking
cli.add_command(demo)
cli.add_command(chassis)
cli.add_command(web)

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ifctl")
