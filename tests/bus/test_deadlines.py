"""Deadlines on the real engines: a stalled server (SIGSTOP) makes calls fail
with a typed error instead of hanging, health_check reports the truth, and the
bus works again when the server resumes."""

from __future__ import annotations

import asyncio

import pytest

from infrafabric.bus import connect
from infrafabric.bus.servers import LocalServer
from infrafabric.errors import BusTimeoutError, BusUnavailableError

GUARD = 15.0  # fails the test if a call hangs; not a latency assertion




async def test_stalled_server_calls_fail_typed_and_recover(own_engine: LocalServer) -> None:
    async with connect(f"{own_engine.url}?timeout=0.5") as bus:
        assert await bus.put("d/k", "before") > 0
        own_engine.pause()
        try:
            async with asyncio.timeout(GUARD):
                with pytest.raises((BusTimeoutError, BusUnavailableError)) as info:
                    await bus.put("d/k", "during")
                assert info.value.exit_code == 3
                with pytest.raises((BusTimeoutError, BusUnavailableError)):
                    await bus.get("d/k")
                health = await bus.health_check()
            assert not health.ok and health.detail
        finally:
            own_engine.resume()
        async with asyncio.timeout(GUARD):
            while True:  # the engine needs a moment to answer again after SIGCONT
                health = await bus.health_check()
                if health.ok:
                    break
                await asyncio.sleep(0.1)
            entry = await bus.get("d/k")
            assert entry is not None and entry.value in (b"before", b"during")
            assert await bus.put("d/k", "after") > 0
