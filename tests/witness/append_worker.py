"""One appender: ``python append_worker.py URL WORKER N``.

Prints ``ready``, waits for ``go`` on stdin, appends N entries (retrying
through bus outages), and prints one JSON line per acknowledged entry:
{"seq", "entry_id", "i"}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from infrafabric.bus import connect
from infrafabric.errors import BusTimeoutError, BusUnavailableError
from infrafabric.witness import Witness


async def main(url: str, worker: str, n: int) -> None:
    async with connect(url) as bus:
        w = Witness(bus, actor=worker)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for i in range(n):
            while True:
                try:
                    e = await w.append("IF.test", "append", {"worker": worker, "i": i})
                    break
                except (BusUnavailableError, BusTimeoutError):
                    await asyncio.sleep(0.1)  # the engine is down: try again
            print(json.dumps({"seq": e.seq, "entry_id": e.entry_id, "i": i}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
