"""A demo agent process: ``python -m infrafabric.demo.agent URL NAME``.

It subscribes to its own inbox, says it is ready, and for every task pushed to
it tries to claim the task with one compare-and-swap (``create`` of the claim
key). It reports each push latency, claim latency and outcome on
``demo/results`` and exits when told ``stop``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from infrafabric.bus import connect


async def run(url: str, name: str) -> None:
    async with connect(url) as bus, bus.subscribe(f"agents/{name}/inbox") as inbox:
        await bus.publish("demo/ready", name)
        async for message in inbox:
            push = json.loads(message.data)
            if push.get("stop"):
                break
            received = time.monotonic_ns()
            task = push["task"]
            claim = json.dumps({"owner": name, "at": time.time()})
            start = time.perf_counter()
            won = await bus.create(f"claims/{task}", claim) is not None
            claim_ms = (time.perf_counter() - start) * 1000
            if won:
                await bus.put(f"results/{task}", json.dumps({"by": name, "result": f"{task} done"}))
            await bus.publish("demo/results", json.dumps({
                "agent": name, "task": task, "won": won, "claim_ms": claim_ms,
                "push_ms": (received - push["sent_ns"]) / 1e6,
            }))


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
