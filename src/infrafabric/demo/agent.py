"""A demo agent process: ``python -m infrafabric.demo.agent URL SWARM``.

It does what an agent built on InfraFabric does: take the best task it can
(or wait for one to be pushed), hold it with heartbeats while it works,
complete it, repeat; it leaves when nothing has come for a few seconds. It
reports each claim on ``demo/progress`` so the orchestrator can show it (and,
in the demo, kill one agent mid-task).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

from infrafabric.bus import EventBus, connect
from infrafabric.coordinator import ClaimOutcome, IFCoordinator
from infrafabric.witness import Witness

IDLE_EXIT = 4.0


class CountingCoordinator(IFCoordinator):
    """Counts and times this agent's claim attempts for the demo summary."""

    won = lost = 0
    claim_ms: list[float]

    async def try_claim(self, swarm_id: str, task_id: str, *, dry_run: bool = False) -> ClaimOutcome:
        start = time.perf_counter()
        outcome = await super().try_claim(swarm_id, task_id, dry_run=dry_run)
        self.claim_ms.append((time.perf_counter() - start) * 1000)
        if outcome.won:
            self.won += 1
        else:
            self.lost += 1
        return outcome


async def run(url: str, swarm: str, lease: float) -> None:
    rng = random.Random(swarm)
    async with connect(url) as bus:
        audit = Witness(bus, actor=swarm)
        async with CountingCoordinator(bus, lease_ttl=lease,
                                       observers=[audit.observer("IF.coordinator")]) as coord:
            await work(bus, coord, swarm, rng)


async def work(bus: EventBus, coord: CountingCoordinator, swarm: str, rng: random.Random) -> None:
    coord.claim_ms = []
    done = 0
    while (claim := await coord.next_task(swarm, wait=IDLE_EXIT)) is not None:
        await bus.publish("demo/progress", json.dumps(
            {"agent": swarm, "event": "claimed", "task": claim.task_id}))
        async with coord.holding(swarm, claim.task_id, claim.claim_id):
            await asyncio.sleep(rng.uniform(0.05, 0.25))  # the "work"
        await coord.complete_task(swarm, claim.task_id, {"by": swarm}, claim.claim_id)
        done += 1
    await bus.publish("demo/progress", json.dumps(
        {"agent": swarm, "event": "left", "done": done, "won": coord.won, "lost": coord.lost,
         "claim_ms": coord.claim_ms}))

if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 2.0))
