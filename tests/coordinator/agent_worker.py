"""A test agent process: ``python agent_worker.py URL SWARM MODE [LEASE]``.

MODE ``hold``: claim the next task, print ``claimed <id>``, then keep its
lease alive forever (the test kills it with SIGKILL mid-task).
MODE ``take``: wait (on pushes, with the lease watcher running) for a task,
print ``claimed <id>`` and complete it.
"""

from __future__ import annotations

import asyncio
import sys

from infrafabric.bus import connect
from infrafabric.coordinator import IFCoordinator


async def main(url: str, swarm: str, mode: str, lease: float) -> None:
    async with connect(url) as bus, IFCoordinator(bus, lease_ttl=lease) as coord:
        outcome = await coord.next_task(swarm, wait=60)
        assert outcome is not None, "no task"
        print(f"claimed {outcome.task_id}", flush=True)
        if mode == "hold":
            async with coord.holding(swarm, outcome.task_id, outcome.claim_id):
                await asyncio.sleep(3600)
        else:
            await coord.complete_task(swarm, outcome.task_id, "done", outcome.claim_id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 1.0))
