"""One debiting process: ``python debit_worker.py URL SWARM N COST [reserve]``:
waits for ``go`` on stdin, then debits COST micro-dollars N times, 16 in
flight. With ``reserve``, each debit first reserves its cost and stops when
the budget cannot cover it; prints ``done K`` with the debits made."""

from __future__ import annotations

import asyncio
import sys

from infrafabric.bus import connect
from infrafabric.governor import IFGovernor


async def main(url: str, swarm: str, n: int, cost: int, reserve: bool) -> None:
    async with connect(url) as bus:
        gov = IFGovernor(bus)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        sem = asyncio.Semaphore(16)
        made = 0

        async def one(i: int) -> None:
            nonlocal made
            async with sem:
                if reserve and not await gov.reserve(swarm, cost):
                    return
                await gov.track_cost(swarm, "llm_call", cost, task_id=f"t{i}",
                                     reserved_micros=cost if reserve else 0)
                made += 1

        await asyncio.gather(*(one(i) for i in range(n)))
        print(f"done {made}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                     sys.argv[5:] == ["reserve"]))
