"""One debiting process: ``python debit_worker.py URL SWARM N COST``: waits for
``go`` on stdin, then debits COST micro-dollars N times, 16 in flight."""

from __future__ import annotations

import asyncio
import sys

from infrafabric.bus import connect
from infrafabric.governor import IFGovernor


async def main(url: str, swarm: str, n: int, cost: int) -> None:
    async with connect(url) as bus:
        gov = IFGovernor(bus)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await gov.track_cost(swarm, "llm_call", cost, task_id=f"t{i}")

        await asyncio.gather(*(one(i) for i in range(n)))
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
