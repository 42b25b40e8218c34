"""A second process on the same bus: ``python creds_worker.py URL``.

Reads commands from stdin, one per line, and answers one line each:

* ``validate TOKEN ENDPOINT`` -> ``ok <swarm_id> <task_id>`` or the error's class name
* ``revoke ID`` -> ``revoked <id>``
* ``issue SWARM TASK ENDPOINT`` -> ``issued <token>``
* ``record SWARM N`` -> records N SLO samples (i ms, every 10th a failure) -> ``recorded N``
"""

from __future__ import annotations

import asyncio
import sys

from infrafabric.bus import connect
from infrafabric.chassis.credentials import CredentialManager
from infrafabric.chassis.slo import SLOTracker
from infrafabric.errors import CredentialError


async def record(tracker: SLOTracker, swarm: str, i: int, sem: asyncio.Semaphore) -> None:
    async with sem:
        await tracker.record_metric(swarm, float(i), i % 10 != 0, task_id=f"t{i}")


async def main(url: str) -> None:
    sem = asyncio.Semaphore(16)
    async with connect(url) as bus:
        creds = CredentialManager(bus)
        tracker = SLOTracker(bus)
        print("ready", flush=True)
        while line := (await asyncio.to_thread(sys.stdin.readline)).strip():
            cmd, *args = line.split()
            if cmd == "validate":
                try:
                    got = await creds.validate(args[0], args[1])
                    print(f"ok {got.swarm_id} {got.task_id}", flush=True)
                except CredentialError as exc:
                    print(type(exc).__name__, flush=True)
            elif cmd == "revoke":
                print(f"revoked {(await creds.revoke(args[0], by='worker')).id}", flush=True)
            elif cmd == "issue":
                issued = await creds.generate_scoped_credentials(args[0], args[1], 60, [args[2]])
                print(f"issued {issued.api_token}", flush=True)
            elif cmd == "record":
                n = int(args[1])
                await asyncio.gather(*(record(tracker, args[0], i, sem) for i in range(n)))
                print(f"recorded {n}", flush=True)
            elif cmd == "quit":
                break


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
