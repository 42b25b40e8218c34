"""One claiming process: ``python claim_worker.py URL SWARM N SEED``: waits
for ``go`` on stdin, then tries to claim the tasks ``t00``..``t{N-1}`` as
SWARM through the assembled fleet (the governor as the claim policy), all at
once, in an order picked by SEED; prints ``won`` and the ids it won."""

from __future__ import annotations

import asyncio
import random
import sys

from infrafabric.bus import connect
from infrafabric.fleet import assemble


async def main(url: str, swarm: str, n: int, seed: int) -> None:
    async with connect(url) as bus:
        coord = assemble(bus, actor=swarm, signer=None).coordinator
        ids = [f"t{i:02d}" for i in range(n)]
        random.Random(seed).shuffle(ids)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        outcomes = await asyncio.gather(*(coord.try_claim(swarm, t) for t in ids))
        print("won", *sorted(o.task_id for o in outcomes if o.won), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
