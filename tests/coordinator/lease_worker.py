"""A test agent process for the path-lease tests: ``python lease_worker.py URL SWARM MODE [TASK]``.

MODE ``work``: take tasks with ``next_task`` (the watcher running, so freed
paths are pushed), hold each a moment, complete it; exit when the board is done.
MODE ``die-between``: claim TASK, but SIGKILL this process right after the
path lease is written and before the claim's compare-and-swap (prints
``lease written`` first).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from typing import Any

from infrafabric.bus import connect
from infrafabric.coordinator import IFCoordinator, TaskStatus


async def work(coord: IFCoordinator, swarm: str) -> None:
    while True:
        outcome = await coord.next_task(swarm, wait=1.0)
        if outcome is None:
            if all(t.status is TaskStatus.COMPLETED for t in await coord.list_tasks()):
                return
            continue
        await asyncio.sleep(random.uniform(0.02, 0.08))  # "editing" its paths
        await coord.complete_task(swarm, outcome.task_id, swarm, outcome.claim_id)


async def die_between(coord: IFCoordinator, swarm: str, task_id: str) -> None:
    take = coord.leases.take

    async def take_then_die(*args: Any, **kwargs: Any) -> Any:
        await take(*args, **kwargs)
        print("lease written", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    coord.leases.take = take_then_die  # type: ignore[method-assign]
    await coord.try_claim(swarm, task_id)
    print("survived", flush=True)


async def main(url: str, swarm: str, mode: str, task_id: str | None) -> None:
    async with connect(url) as bus, IFCoordinator(bus, lease_ttl=30) as coord:
        if mode == "work":
            await work(coord, swarm)
        else:
            assert task_id is not None
            await die_between(coord, swarm, task_id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
