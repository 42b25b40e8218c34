"""One racer of the cross-process race: ``python race_worker.py URL WORKER N MODE [REVS_JSON]``.

Connects, prints ``ready``, waits for ``go`` on stdin so every racer starts at
once, then tries to win every key ``race/k<i>`` (in its own shuffled order,
64 in flight) by ``create`` or by ``update`` at a given revision, and prints
one JSON line: the keys it won.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Callable

from infrafabric.bus import connect


def wait_for_go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


async def race(
    url: str, worker: str, n: int, mode: str, revs: dict[str, int],
    ready: Callable[[], object] = wait_for_go,
) -> dict[str, object]:
    async with connect(url) as bus:
        await asyncio.to_thread(ready)
        keys = [f"race/k{i}" for i in range(n)]
        random.Random(worker).shuffle(keys)
        sem = asyncio.Semaphore(64)
        won: list[str] = []

        async def one(key: str) -> None:
            async with sem:
                if mode == "create":
                    rev = await bus.create(key, worker)
                else:
                    rev = await bus.update(key, worker, revs[key])
                if rev is not None:
                    won.append(key)

        await asyncio.gather(*(one(k) for k in keys))
        return {"worker": worker, "won": won}


if __name__ == "__main__":
    url, worker, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    revs = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    print(json.dumps(asyncio.run(race(url, worker, n, mode, revs))), flush=True)
