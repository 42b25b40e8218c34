"""Model-based test of the coordinator's rules (hypothesis state machine).

A simple model says what must happen; the coordinator on a memory bus, with a
fake clock, must agree after every step. Invariants: a task is never owned by
two swarms, never claimable before its dependencies complete, never completed
twice, and every claim or completion by a non-holder is refused.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from infrafabric.bus import from_url
from infrafabric.coordinator import IFCoordinator, TaskStatus
from infrafabric.errors import NotOwnerError
from support import Clock

SWARMS = ["s0", "s1", "s2"]
TTL = 10.0


class CoordinatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock(1_000.0)
        self.bus = from_url(f"memory://model?namespace=m{uuid.uuid4().hex[:10]}")
        self.run(self.bus.connect())
        self.coord = IFCoordinator(self.bus, lease_ttl=TTL, clock=self.clock)
        # the model
        self.deps: dict[str, list[str]] = {}
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.owner: dict[str, tuple[str, float, str]] = {}  # task -> (swarm, lease_until, claim id)
        self.attempts: dict[str, int] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.bus.close())
        self.loop.close()

    @initialize()
    def swarms(self) -> None:
        for s in SWARMS:
            self.run(self.coord.register_swarm(s))

    # -- model helpers --

    def live_owner(self, task: str) -> str | None:
        held = self.owner.get(task)
        return held[0] if held and held[1] > self.clock.now else None

    def claimable(self, task: str) -> bool:
        return (task not in self.done and task not in self.failed and self.live_owner(task) is None
                and all(d in self.done for d in self.deps[task]))

    # -- rules --

    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        tid = f"t{len(self.deps)}"
        deps = data.draw(st.lists(st.sampled_from(sorted(self.deps)), unique=True, max_size=2)
                         if self.deps else st.just([]))
        task = self.run(self.coord.create_task({"id": tid, "title": tid, "dependencies": deps}))
        self.deps[tid] = deps
        self.attempts[tid] = 0
        expected = TaskStatus.AVAILABLE if all(d in self.done for d in deps) else TaskStatus.BLOCKED
        assert task.status is expected

    @precondition(lambda self: self.deps)
    @rule(data=st.data(), swarm=st.sampled_from(SWARMS))
    def claim(self, data: st.DataObject, swarm: str) -> None:
        tid = data.draw(st.sampled_from(sorted(self.deps)))
        expected = self.claimable(tid)
        outcome = self.run(self.coord.try_claim(swarm, tid))
        assert outcome.won is expected, (tid, swarm, outcome.reason, self.owner.get(tid))
        if outcome.won:
            assert outcome.claim_id
            self.owner[tid] = (swarm, self.clock.now + TTL, outcome.claim_id)

    @precondition(lambda self: self.owner)
    @rule(data=st.data(), by_owner=st.booleans())
    def complete(self, data: st.DataObject, by_owner: bool) -> None:
        tid = data.draw(st.sampled_from(sorted(self.owner)))
        holder, _, claim_id = self.owner[tid]
        swarm = holder if by_owner else next(s for s in SWARMS if s != holder)
        try:
            self.run(self.coord.complete_task(swarm, tid, "r", claim_id if by_owner else None))
        except NotOwnerError:
            assert not by_owner
            return
        assert by_owner
        self.done.add(tid)
        del self.owner[tid]

    @precondition(lambda self: self.owner)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.owner)))
        holder, _, claim_id = self.owner.pop(tid)
        task = self.run(self.coord.fail_task(holder, tid, "boom", claim_id))
        self.attempts[tid] += 1
        if self.attempts[tid] >= task.max_attempts:
            self.failed.add(tid)
            assert task.status is TaskStatus.FAILED
        else:
            assert task.status is TaskStatus.AVAILABLE

    @precondition(lambda self: self.owner)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.owner)))
        holder, _, claim_id = self.owner[tid]
        until = self.run(self.coord.heartbeat(holder, tid, claim_id))
        assert until == self.clock.now + TTL
        self.owner[tid] = (holder, until, claim_id)

    @rule(seconds=st.sampled_from([1.0, TTL - 0.001, TTL, TTL + 1]))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @precondition(lambda self: self.owner)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.owner)))
        lapsed = self.live_owner(tid) is None
        task = self.run(self.coord.expire_lease(tid))
        assert (task is not None) is lapsed
        if task is not None:
            del self.owner[tid]
            self.attempts[tid] += 1
            if self.attempts[tid] >= task.max_attempts:
                self.failed.add(tid)

    # -- invariants --

    @invariant()
    def board_matches_model(self) -> None:
        if not self.deps:
            return
        for task in self.run(self.coord.list_tasks()):
            if task.id in self.done:
                assert task.status is TaskStatus.COMPLETED
                assert [h.to for h in task.history].count(TaskStatus.COMPLETED) == 1
            elif task.status is TaskStatus.CLAIMED:
                assert task.owner == self.owner[task.id][0]
                assert task.claim_id == self.owner[task.id][2]
            else:
                assert task.id not in self.owner
            if task.status in (TaskStatus.AVAILABLE, TaskStatus.CLAIMED, TaskStatus.COMPLETED):
                assert all(d in self.done for d in task.dependencies), task.id


CoordinatorMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestCoordinatorModel = CoordinatorMachine.TestCase
