"""One agent process racing others through the gateway: connects (as its
env file says), prints ``ready``, waits for ``go``, calls ``task_next`` once
and prints the answer as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from infrafabric.agent.remote import Remote, call_in


async def main() -> None:
    async with Remote.from_env(os.environ["IF_BUS_URL"]).client() as session:
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(await call_in(session, "task_next", {"wait_s": 0})), flush=True)


asyncio.run(main())
