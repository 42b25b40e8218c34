"""A test process for the ready index: ``python ready_worker.py URL SWARM MODE``.

MODE ``drain``: hand out (``next_task``, no waiting) and complete tasks until
none is left, printing ``done <id>`` for each; with several of these racing,
each id must appear once.
MODE ``offer``: offer the task ``T-crash`` in the index (the first of the two
writes that make a task available), print ``offered``, then hang before the
task's own write (the test kills it with SIGKILL there).
"""

from __future__ import annotations

import asyncio
import sys

from infrafabric.bus import connect
from infrafabric.coordinator import IFCoordinator
from infrafabric.fleet import assemble


async def main(url: str, swarm: str, mode: str) -> None:
    async with connect(url) as bus:
        if mode == "drain":
            fleet = assemble(bus, actor=swarm, signer=None)
            try:
                while (got := await fleet.coordinator.next_task(swarm)) is not None:
                    await fleet.coordinator.complete_task(swarm, got.task_id, swarm, got.claim_id)
                    print(f"done {got.task_id}", flush=True)
            finally:
                await fleet.close()
            return
        coord = IFCoordinator(bus)
        task = await coord.get_task("T-crash")
        await coord.ready.offer([task.model_copy(update={"ready_seq": task.ready_seq + 1})])
        print("offered", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
