"""Recording real runs on real buses and checking them.

Agents race to claim ~50 tasks (some lose, some fail or release a task, one
abandons a claim and tries to complete it after its lease has lapsed), debit
their budgets and append to the witness; the merged history must pass every
check against the state left on the bus. Also: a recorder file cut short by a
kill loads with the cut operation as unknown.

Run as a script (``python test_history.py URL DIR SWARM SEED``) this module is
one agent process, for the cross-process test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from faultkit import (
    HistoryRecorder,
    Outcome,
    check,
    load_history,
    read_final_state,
    recorded_append,
    recorded_claim,
    recorded_complete,
    recorded_debit,
    recorded_fail,
    recorded_heartbeat,
    recorded_release,
)
from faultkit.storm import agent_env
from infrafabric.bus import EventBus, connect
from infrafabric.coordinator import IFCoordinator, Task, TaskStatus
from infrafabric.errors import BusTimeoutError, BusUnavailableError, InfraFabricError, NotOwnerError
from infrafabric.governor.core import IFGovernor
from infrafabric.governor.models import Budget
from infrafabric.witness.log import Witness

LEASE = 0.6
TASKS = 50


async def agent(url: str, directory: Path, swarm: str, seed: int) -> None:
    """Work until every task is completed, recording every operation."""
    rng = random.Random(seed)
    abandoned: list[tuple[str, str | None]] = []
    walk_away = True
    async with connect(url) as bus:
        coord = IFCoordinator(bus, lease_ttl=LEASE, max_attempts=1000)
        gov = IFGovernor(bus)
        witness = Witness(bus, actor=swarm)
        with HistoryRecorder(directory, swarm) as rec:
            while True:
                tasks = await coord.list_tasks()
                if all(t.status is TaskStatus.COMPLETED for t in tasks):
                    break
                now = time.time()
                open_ = [t for t in tasks if t.status is TaskStatus.AVAILABLE or (
                    t.status is TaskStatus.CLAIMED and t.lease_until is not None and t.lease_until <= now)]
                if not open_:
                    await finish_late(rec, coord, swarm, abandoned)
                    await asyncio.sleep(0.05)
                    continue
                task = rng.choice(open_[:3])  # agents crowd the head of the board: claims collide
                outcome = await recorded_claim(rec, coord, swarm, task.id)
                if not outcome.won:
                    continue
                cid = outcome.claim_id
                try:
                    await recorded_heartbeat(rec, coord, swarm, task.id, cid)
                    await recorded_debit(rec, gov, swarm, "work", rng.randint(1, 10_000), task=task.id)
                    await recorded_append(rec, witness, "agent", "worked", {"task": task.id}, actor=swarm)
                    roll = rng.random()
                    if roll < 0.1:
                        await recorded_fail(rec, coord, swarm, task.id, cid, "flaky")
                    elif roll < 0.2:
                        await recorded_release(rec, coord, swarm, task.id, cid)
                    elif roll < 0.3 and walk_away:
                        walk_away = False
                        abandoned.append((task.id, cid))  # the lease lapses; others take it over
                    else:
                        await recorded_complete(rec, coord, swarm, task.id, cid, swarm)
                except InfraFabricError:
                    continue
            await finish_late(rec, coord, swarm, abandoned)


async def finish_late(rec: HistoryRecorder, coord: IFCoordinator, swarm: str,
                      abandoned: list[tuple[str, str | None]]) -> None:
    """Complete abandoned claims long after their lease: refused if another
    swarm took the task over, accepted if nobody did."""
    while abandoned:
        task_id, cid = abandoned.pop()
        with contextlib.suppress(InfraFabricError):
            await recorded_complete(rec, coord, swarm, task_id, cid, "late")


async def setup(bus: EventBus, swarms: list[str]) -> None:
    coord, gov = IFCoordinator(bus, max_attempts=1000), IFGovernor(bus)
    for s in swarms:
        await coord.register_swarm(s)
        await gov.set_budget(s, 10**12)
    await coord.create_tasks([{"id": f"T{i:02d}", "title": f"task {i}",
                               "dependencies": [f"T{i - 1:02d}"] if i % 5 else []} for i in range(TASKS)])


def assert_passes(report: object) -> None:
    assert getattr(report, "ok", False), str(report)


async def test_asyncio_agents_racing_on_a_real_bus_pass_every_check(bus_url: str, tmp_path: Path) -> None:
    swarms = [f"agent-{i}" for i in range(4)]
    async with connect(bus_url) as bus:
        await setup(bus, swarms)
        async with asyncio.timeout(40):
            await asyncio.gather(*(agent(bus_url, tmp_path, s, seed) for seed, s in enumerate(swarms)))
        history = load_history(tmp_path)
        final = await read_final_state(bus, lease_ttl=LEASE)
        report = check(history, final)
        assert_passes(report)
        assert len(history.files) == len(swarms)
        counts = history.counts()
        assert counts["complete"]["ok"] == TASKS
        assert counts["claim"]["ok"] > TASKS and counts["claim"]["fail"] > 0, counts  # races were lost
        assert counts["debit"]["ok"] == counts["witness_append"]["ok"] == len(final.ledger)
        assert all(c["checked"] > 0 for c in report.counts().values()), report.counts()
        assert json.loads(report.to_json())["ok"] is True

        # the same check sees a write lost on the bus (gone from the ledger and the budget's journal)
        debit = next(o for o in history.of("debit") if o.acknowledged)
        assert debit.ledger_key is not None and debit.swarm is not None
        assert await bus.delete(debit.ledger_key)
        budget_key = f"gov/budgets/{debit.swarm}"
        entry = await bus.get(budget_key)
        assert entry is not None
        budget = Budget.model_validate_json(entry.value)
        kept = [e for e in budget.journal if e.key != debit.ledger_key]
        await bus.put(budget_key, budget.model_copy(update={"journal": kept}).model_dump_json())
        damaged = check(history, await read_final_state(bus, lease_ttl=LEASE, witness=False))
        assert [v.ops for v in damaged.checks["no_lost_writes"].violations] == [(debit.id,)]
        assert not damaged.checks["money"].ok


async def test_three_agent_processes_pass_every_check(engine_url: str, tmp_path: Path) -> None:
    swarms = [f"proc-{i}" for i in range(3)]
    async with connect(engine_url) as bus:
        await setup(bus, swarms)
        procs = [subprocess.Popen([sys.executable, __file__, engine_url, str(tmp_path), s, str(seed)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_env())
                 for seed, s in enumerate(swarms)]
        try:
            results = [await asyncio.to_thread(p.communicate, timeout=45) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        assert [p.returncode for p in procs] == [0, 0, 0], results
        history = load_history(tmp_path)
        assert {o.process for o in history} == set(swarms)
        report = check(history, await read_final_state(bus, lease_ttl=LEASE))
        assert_passes(report)
        assert history.counts()["complete"]["ok"] == TASKS


async def test_a_file_cut_short_by_a_kill_loads_the_cut_op_as_unknown(tmp_path: Path) -> None:
    url = f"memory://?namespace=cut{os.getpid()}{time.monotonic_ns()}"
    async with connect(url) as bus:
        await setup(bus, ["solo"])
        coord = IFCoordinator(bus, lease_ttl=LEASE)
        with HistoryRecorder(tmp_path, "solo") as rec:
            won = await recorded_claim(rec, coord, "solo", "T00")
            await recorded_complete(rec, coord, "solo", "T00", won.claim_id, "done")
            won = await recorded_claim(rec, coord, "solo", "T01")
        path = rec.path
        whole = load_history(tmp_path)
        assert [o.outcome for o in whole] == [Outcome.OK] * 3
        # SIGKILL while the claim's outcome line was being written: its tail never reached the disk
        data = path.read_bytes()
        assert data.endswith(b"\n")
        os.truncate(path, len(data) - 12)
        history = load_history(tmp_path)
        assert history.partial_lines == 1 and history.bad_lines == 0
        cut = history.ops[-1]
        assert (cut.op, cut.task, cut.outcome, cut.end, cut.claim_id) == ("claim", "T01", Outcome.UNKNOWN,
                                                                          None, None)
        assert "died mid-call" in (cut.error or "")
        # the claim did land: unknown tolerates it, and the rest still checks
        report = check(history, await read_final_state(bus, lease_ttl=LEASE))
        assert_passes(report)
        # killed while the invocation itself was being written: the call was never made
        os.truncate(path, data.rfind(b"\n", 0, len(data) - 1) - 5)
        history = load_history(tmp_path)
        assert [o.op for o in history] == ["claim", "complete"] and history.partial_lines == 1


class LeaseIgnoringCoordinator(IFCoordinator):
    """A broken coordinator: every lease counts as lapsed."""

    def _lapsed(self, task: Task, now: float | None = None) -> bool:
        return True


async def test_the_checker_catches_a_coordinator_that_ignores_leases(bus: EventBus, tmp_path: Path) -> None:
    await setup(bus, ["a", "b"])
    broken = LeaseIgnoringCoordinator(bus, lease_ttl=30)
    with HistoryRecorder(tmp_path, "agents") as rec:
        first = await recorded_claim(rec, broken, "a", "T00")
        second = await recorded_claim(rec, broken, "b", "T00")
        assert first.won and second.won
        await recorded_complete(rec, broken, "b", "T00", second.claim_id)
    report = check(load_history(tmp_path), await read_final_state(bus, lease_ttl=30))
    assert not report.ok
    assert {v.check for v in report.violations} == {"single_owner"}, str(report)
    claims = {o.id for o in load_history(tmp_path).of("claim")}
    assert all(set(v.ops) == claims for v in report.checks["single_owner"].violations)


def test_recorder_classifies_outcomes(tmp_path: Path) -> None:
    with HistoryRecorder(tmp_path, "p") as rec:
        rec.begin("claim", swarm="s", task="T").ok(claim_id="c1")
        with rec.begin("complete", swarm="s", task="T", claim_id="c1"):
            pass
        for exc in (NotOwnerError("claim lost"), BusTimeoutError("deadline"),
                    BusUnavailableError("connection lost"), asyncio.CancelledError()):
            with contextlib.suppress(BaseException), rec.begin("heartbeat", swarm="s", task="T"):
                raise exc
        rec.begin("debit", swarm="s", amount=7)  # never comes back
    ops = load_history(tmp_path).ops
    assert [(o.op, o.outcome.value) for o in ops] == [
        ("claim", "ok"), ("complete", "ok"), ("heartbeat", "fail"), ("heartbeat", "unknown"),
        ("heartbeat", "unknown"), ("heartbeat", "unknown"), ("debit", "unknown")]
    assert ops[0].claim_id == "c1" and ops[2].error == "NotOwnerError: claim lost"
    assert all(o.end is not None and o.end >= o.start and o.end_mono is not None for o in ops[:-1])
    assert ops[-1].end is None and ops[-1].amount == 7
    assert len({o.id for o in ops}) == len(ops)


if __name__ == "__main__":
    asyncio.run(agent(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
