"""[5/9] A claim's witness entry is off its critical path, never lost.

The ``task_claimed`` entry is written after the claim is acknowledged
(``WITNESSED_LATER``); what makes that safe is that the claim's own record
(its task's history, tagged with the claim id) says what the entry would.
On every backend: the entry follows the claim in order with the process's
other entries; a claim whose entry could not be written is still
acknowledged, is found by ``unwitnessed_claims`` and repaired by
``witness_claims`` (and by ``ifctl doctor --repair``). Across processes on
NATS and etcd: agents killed (SIGKILL) the moment their claim is
acknowledged leave, after a repair, exactly one entry per claim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.bus.layout import ENTRIES
from infrafabric.coordinator import TaskStatus
from infrafabric.doctor import unwitnessed_claims, witness_claims
from infrafabric.errors import BusUnavailableError
from infrafabric.fleet import assemble
from infrafabric.witness import Witness

IFCTL = str(Path(sys.executable).with_name("ifctl"))


async def _claimed_entries(bus: EventBus) -> Counter[str]:
    return Counter([e.params["claim_id"] async for e in Witness(bus).entries()
                    if e.operation == "task_claimed"])


async def test_the_claims_entry_follows_it_in_order(bus: EventBus) -> None:
    fleet = assemble(bus, actor="test", signer=None)
    try:
        await fleet.register_swarm("a", [])
        await fleet.coordinator.create_tasks([{"id": "t1", "title": "x"}])
        got = await fleet.coordinator.next_task("a")
        assert got is not None and got.won
        await fleet.coordinator.complete_task("a", "t1", "done", got.claim_id)
    finally:
        await fleet.close()  # lets what is queued be written
    ops = [(e.operation, e.params.get("claim_id")) async for e in Witness(bus).entries()
           if e.params.get("task_id") == "t1"]
    assert ops == [("task_created", None), ("task_claimed", got.claim_id), ("task_completed", None)], ops
    task = await fleet.coordinator.get_task("t1")
    assert task is not None and [h.op for h in task.history if h.to is TaskStatus.CLAIMED] == [got.claim_id]
    assert await unwitnessed_claims(bus, Witness(bus), grace=0) == []


async def test_a_claim_whose_entry_was_not_written_is_found_and_repaired(
        bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    fleet = assemble(bus, actor="test", signer=None)
    create = bus.create
    outage = False

    async def chain_down(key: str, value: Any) -> Any:
        if outage and key.startswith(ENTRIES):
            raise BusUnavailableError("cannot reach the bus (test: the chain only)")
        return await create(key, value)

    bus.create = chain_down  # type: ignore[method-assign]
    try:
        await fleet.register_swarm("a", [])
        await fleet.coordinator.create_tasks([{"id": "t1", "title": "x"}, {"id": "t2", "title": "y"}])
        outage = True
        with caplog.at_level(logging.WARNING, logger="infrafabric.witness.log"):
            got = await fleet.coordinator.next_task("a")
            await fleet.witness.settle(10)
        assert got is not None and got.won  # acknowledged: its record holds it
        assert "ifctl doctor --repair" in caplog.text
        outage = False
        other = await fleet.coordinator.next_task("a")  # written as usual once the chain is back
        assert other is not None
    finally:
        bus.create = create  # type: ignore[method-assign]
        await fleet.close()
    witness = Witness(bus)
    missing = await unwitnessed_claims(bus, witness, grace=0)
    assert [(m.task_id, m.claim_id, m.swarm_id) for m in missing] == [(got.task_id, got.claim_id, "a")]
    assert await unwitnessed_claims(bus, witness) == []  # not within the grace: a live writer is at it
    assert await witness_claims(witness, missing, by="ops") == 1
    assert await unwitnessed_claims(bus, witness, grace=0) == []
    assert await _claimed_entries(bus) == Counter({got.claim_id: 1, other.claim_id: 1})
    assert (await witness.verify()).ok


AGENT = textwrap.dedent("""
    import asyncio, os, signal, sys
    from infrafabric.bus import connect
    from infrafabric.fleet import assemble

    async def main(url, swarm):
        async with connect(url) as bus:
            fleet = assemble(bus, actor=swarm, signer=None)
            while True:
                got = await fleet.coordinator.next_task(swarm)
                if got is None:
                    return
                print(got.task_id, got.claim_id, flush=True)
                if got.task_id.endswith(("0", "3", "6")):
                    os.kill(os.getpid(), signal.SIGKILL)  # dies the moment its claim is acknowledged
                await fleet.coordinator.complete_task(swarm, got.task_id, "done", got.claim_id)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


async def test_agents_killed_at_the_claim_leave_one_entry_per_claim_after_repair(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        fleet = assemble(bus, actor="test", signer=None)
        try:
            for i in range(3):
                await fleet.register_swarm(f"k{i}", [])
            await fleet.coordinator.create_tasks([{"id": f"t{i:02d}", "title": "x"} for i in range(12)])
        finally:
            await fleet.close()
        acknowledged: dict[str, str] = {}
        for _ in range(8):  # agents are killed and started again until the board is drained
            procs = [subprocess.Popen([sys.executable, "-c", AGENT, engine_url, f"k{i}"], text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
            for p in procs:
                out, err = await asyncio.to_thread(p.communicate, timeout=120)
                assert p.returncode in (0, -signal.SIGKILL), err[-2000:]
                acknowledged.update(line.split() for line in out.splitlines())  # type: ignore[arg-type]
            tasks = await fleet.coordinator.list_tasks()
            if all(t.status is not TaskStatus.AVAILABLE for t in tasks):
                break
        assert len(acknowledged) >= 12
        witness = Witness(bus)
        missing = await unwitnessed_claims(bus, witness, now=time.time() + 3600)
        await witness_claims(witness, missing, by="ops")
        entries = await _claimed_entries(bus)
        claims = {h.op for t in await fleet.coordinator.list_tasks() for h in t.history
                  if h.to is TaskStatus.CLAIMED and h.op}
        assert set(acknowledged.values()) <= claims  # every acknowledged claim is on its task
        assert set(entries) == claims and max(entries.values()) == 1, entries  # one entry each
        assert (await witness.verify()).ok


async def test_ifctl_doctor_lists_and_repairs_a_claim_without_its_entry(engine_url: str,
                                                                      tmp_path: Path) -> None:
    async with connect(engine_url) as bus:
        fleet = assemble(bus, actor="test", signer=None, clock=lambda: time.time() - 600)  # a while ago
        create = bus.create

        async def chain_down(key: str, value: Any) -> Any:
            if key.startswith(ENTRIES):
                raise BusUnavailableError("cannot reach the bus (test: the chain only)")
            return await create(key, value)

        try:
            await fleet.register_swarm("a", [])
            await fleet.coordinator.create_tasks([{"id": "t1", "title": "x"}])
            bus.create = chain_down  # type: ignore[method-assign]
            got = await fleet.coordinator.next_task("a")
            await fleet.witness.settle(10)
        finally:
            bus.create = create  # type: ignore[method-assign]
            await fleet.close()
        assert got is not None and got.won
    env = {**os.environ, "IF_BUS_URL": engine_url, "IF_HOME": str(tmp_path / "home"), "USER": "alice"}

    def ifctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IFCTL, *args], capture_output=True, text=True, env=env, timeout=90)

    found = await asyncio.to_thread(ifctl, "doctor", "--json")
    assert found.returncode == 1, found.stderr
    assert [(c["task_id"], c["claim_id"]) for c in json.loads(found.stdout)["unwitnessed_claims"]] == \
        [("t1", got.claim_id)]
    repaired = await asyncio.to_thread(ifctl, "doctor", "--repair")
    assert repaired.returncode == 0 and "marked recovered" in repaired.stdout, repaired.stdout
    clean = await asyncio.to_thread(ifctl, "doctor")
    assert clean.returncode == 0, clean.stdout
    async with connect(engine_url) as bus:
        assert await _claimed_entries(bus) == Counter({got.claim_id: 1})
