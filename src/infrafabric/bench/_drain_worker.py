"""An agent process of ``ifctl bench scale``'s drain: many simulated agents.

``python -m infrafabric.bench._drain_worker SPEC``, SPEC a JSON object with
``url`` (the bus), ``agents`` (the swarm ids this process simulates) and
``idle_s`` (how long an agent waits for work before it decides the board is
drained). The process assembles one fleet (governed and witnessed, its
watcher running, as an ``ifctl mcp`` server would), prints ``ready``, waits
for ``go`` on stdin, then runs every agent at once: ``next_task`` (waiting
up to ``idle_s``), ``complete_task``, again, until ``next_task`` comes back
empty. It prints one JSON object: how many tasks its agents completed, their
errors, and its window in CLOCK_MONOTONIC (which tasks were completed, and how
often, the parent reads from the board itself).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from infrafabric.bench._common import run_worker, stdin_signal
from infrafabric.bus import connect
from infrafabric.fleet import assemble
from infrafabric.serving import tune_gc

__all__ = ["main"]


async def _run(spec: dict[str, Any]) -> None:
    async with connect(spec["url"]) as bus:
        fleet = assemble(bus, actor="bench-drain", signer=None)
        try:
            await fleet.coordinator.start()
            tune_gc()  # this process stands for an agent server: it runs as `ifctl mcp` does
            go = stdin_signal(asyncio.get_running_loop())
            print("ready", flush=True)
            await go
            done = 0
            errors: list[str] = []
            coord = fleet.coordinator

            async def agent(swarm: str) -> None:
                nonlocal done
                while True:
                    got = await coord.next_task(swarm, wait=float(spec["idle_s"]))
                    if got is None:
                        return
                    await coord.complete_task(swarm, got.task_id, "done", got.claim_id)
                    done += 1

            async def guarded(swarm: str) -> None:
                try:
                    await agent(swarm)
                except Exception as exc:  # reported, not raised: the other agents go on
                    errors.append(f"{swarm}: {type(exc).__name__}: {exc}")

            start = time.monotonic_ns()
            await asyncio.gather(*(guarded(s) for s in spec["agents"]))
            end = time.monotonic_ns()
            print(json.dumps({"done": done, "errors": errors[:5], "error_count": len(errors),
                              "start_ns": start, "end_ns": end}), flush=True)
        finally:
            await fleet.close()


def main() -> int:
    return run_worker(_run(json.loads(sys.argv[1])))


if __name__ == "__main__":
    sys.exit(main())
