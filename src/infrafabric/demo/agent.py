"""A demo agent process: ``python -m infrafabric.demo.agent URL SWARM [--flaky] [--blocker TASK]``.

It does what an agent built on InfraFabric does: take the best task it is
qualified for (the governor admits the claim) or wait for one to be pushed —
never polling; hold it with heartbeats while it runs the task's code in the
chassis sandbox; pay for the work; complete it; repeat until told to stop.
``--flaky`` makes its module run out of fuel on every task (its breaker opens
after the policy's consecutive failures); ``--blocker TASK`` makes it report a
blocker on that task and ask for helpers before finishing it. It reports what
it does on ``demo/progress`` for the orchestrator's live view and summary.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import signal
import sys
import time
from decimal import Decimal
from typing import Any

from prometheus_client import REGISTRY

from infrafabric.bus import EventBus, connect
from infrafabric.chassis import ServiceContract
from infrafabric.coordinator import ClaimOutcome, Task, TaskStatus
from infrafabric.errors import InfraFabricError, NotOwnerError, SandboxError, SwarmStoppedError
from infrafabric.fleet import assemble

PROGRESS = "demo/progress"
CONTROL = "demo/control"
STOP = "demo/stop"

#: the task module every demo agent runs: reads the task (JSON), checks it has an id, returns {"ok": true}
TASK_WAT = """(module
  (import "infrafabric" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 0) "{\\"ok\\":true}")
  (data (i32.const 16) "working on the task")
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then (drop (memory.grow (i32.const 1)))))
    (local.get $p))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $h i32)
    (call $log (i32.const 16) (i32.const 19))
    (loop $hash  ;; some real work: FNV-1a over the task, 200 times
      (local.set $h (i32.mul (i32.xor (local.get $h)
                                      (i32.load8_u (i32.add (local.get $ptr)
                                                            (i32.rem_u (local.get $i) (local.get $len)))))
                             (i32.const 0x01000193)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $hash (i32.lt_u (local.get $i) (i32.mul (local.get $len) (i32.const 200)))))
    (i64.const 11)))
"""


def claims_made() -> tuple[int, int]:
    """This process's claim attempts so far: (won, not won), from the library's
    own per-process counters (:mod:`infrafabric.metrics`)."""
    def count(outcome: str) -> int:
        return int(REGISTRY.get_sample_value("infrafabric_claims_total", {"outcome": outcome}) or 0)

    return count("won"), count("lost") + count("refused")


class Agent:
    def __init__(self, bus: EventBus, swarm: str, *, lease: float, flaky: bool, blocker: str | None,
                 work_s: float, home: str | None = None) -> None:
        self.bus, self.swarm, self.flaky, self.blocker, self.work_s = bus, swarm, flaky, blocker, work_s
        self.fleet = assemble(bus, home=home, actor=swarm, lease_ttl=lease)  # as every front end builds it
        self.coord, self.gov = self.fleet.coordinator, self.fleet.governor
        self.chassis = self.fleet.chassis
        self.stopping = asyncio.Event()
        self.stats: dict[str, Any] = {"claim_ms": [], "push_ms": [], "done": 0,
                                      "failed": 0, "spent_micros": 0, "wasted_micros": 0}

    async def say(self, event: str, **fields: Any) -> None:
        await self.bus.publish(PROGRESS, json.dumps({"agent": self.swarm, "event": event, **fields},
                                                    default=str))

    async def claim(self, wait: float) -> ClaimOutcome | None:
        """The best task now; else wait for a push. A task that arrives by push
        while this agent is idle measures how fast work reaches an idle agent:
        from the moment it became available to the moment it was claimed."""
        t0 = time.perf_counter()
        outcome = await self.coord.next_task(self.swarm, wait=0)
        if outcome is not None:
            self.stats["claim_ms"].append((time.perf_counter() - t0) * 1000)
            return outcome
        outcome = await self.coord.next_task(self.swarm, wait=wait)
        if outcome is not None and outcome.task is not None:
            task = outcome.task
            # only when the claim followed an availability (a claim that took over a lapsed
            # lease directly has no such moment on record: its history says claimed, claimed)
            became = task.history[-2] if len(task.history) > 1 else None
            if became is not None and became.to is TaskStatus.AVAILABLE and became.reason != "created":
                self.stats["push_ms"].append((task.updated_at - became.at) * 1000)
        return outcome

    async def run(self) -> None:
        profile = await self.gov.profile(self.swarm)
        if profile is None:
            raise InfraFabricError(f"{self.swarm} is not registered with the governor")
        limits = {"max_fuel": 50_000 if self.flaky else 200_000_000, "max_memory_mb": 16,
                  "max_execution_time_seconds": 5}
        await self.chassis.load_swarm(self.swarm, TASK_WAT, ServiceContract(
            swarm_id=self.swarm, capabilities=profile.capabilities, resource_limits=limits,
            version="1.0.0"))
        async with self.coord, self.bus.subscribe(CONTROL) as control:
            stopper = asyncio.create_task(self._watch_control(control))
            if await self.bus.get(STOP) is not None:  # told before this process subscribed
                self.stopping.set()
            await self.say("ready", pid_capabilities=profile.capabilities)
            try:
                while not self.stopping.is_set():
                    try:
                        outcome = await self.claim(wait=1.0)
                    except SwarmStoppedError:  # the governor stopped it: waiting is all that is left
                        await self.say("breaker_open")
                        await self.stopping.wait()
                        break
                    if outcome is None or outcome.task is None:
                        continue
                    await self.work(outcome.task, outcome.claim_id, profile.cost_per_hour_micros,
                                    profile.model)
            finally:
                stopper.cancel()
                won, lost = claims_made()
                await self.say("left", won=won, lost=lost, **self.stats)
                await self.chassis.close()

    async def _watch_control(self, control: Any) -> None:
        async for msg in control:
            if json.loads(msg.data).get("stop"):
                self.stopping.set()
                return

    async def work(self, task: Task, claim_id: str | None, rate: int, model: str | None) -> None:
        await self.say("claimed", task=task.id, title=task.title)
        cost = int(rate * (task.estimate_hours or Decimal(1)) / 100)  # the demo's "hours" are 36 s
        try:
            async with self.coord.holding(self.swarm, task.id, claim_id) as lost:
                if task.id == self.blocker:
                    report = await self.coord.detect_blocker(self.swarm, {
                        "task": task.id, "message": "needs a security review before it can land",
                        "capabilities": ["security:audit", "testing:security"]})
                    helpers = [h["swarm_id"] for h in report.get("help", {}).get("helpers", [])]
                    await self.say("blocked", task=task.id, helpers=helpers)
                await asyncio.sleep(self.work_s)
                try:
                    run = await self.chassis.execute_task(self.swarm, task.model_dump(mode="json"),
                                                          task_id=task.id)
                except SandboxError as exc:
                    await self.gov.track_cost(self.swarm, "task_attempt", cost, task_id=task.id, model=model)
                    self.stats["spent_micros"] += cost
                    self.stats["wasted_micros"] += cost
                    self.stats["failed"] += 1
                    await self.coord.fail_task(self.swarm, task.id, f"sandbox: {exc.limit}", claim_id)
                    breaker = await self.gov.breaker(self.swarm)  # the failure counted towards it
                    await self.say("failed", task=task.id, limit=exc.limit, breaker=breaker.state.value)
                    return
                if lost.is_set():
                    raise NotOwnerError(f"lost the claim on {task.id}")
                await self.gov.track_cost(self.swarm, "task", cost, task_id=task.id, model=model)
                self.stats["spent_micros"] += cost
                await self.coord.complete_task(self.swarm, task.id, run.output, claim_id)
                self.stats["done"] += 1
                await self.say("completed", task=task.id, spent=cost)
        except NotOwnerError:
            await self.say("lost", task=task.id)


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def main(args: argparse.Namespace) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)  # what a stuck agent awaits
    async with connect(args.url) as bus:
        agent = Agent(bus, args.swarm, lease=args.lease, flaky=args.flaky, blocker=args.blocker,
                      work_s=args.work, home=args.home)
        await agent.run()


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` shows where a stuck agent is
    parser = argparse.ArgumentParser(prog="python -m infrafabric.demo.agent")
    parser.add_argument("url")
    parser.add_argument("swarm")
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--work", type=float, default=0.15, help="seconds of 'thinking' per task")
    parser.add_argument("--flaky", action="store_true")
    parser.add_argument("--blocker")
    parser.add_argument("--home", help="the state directory (its witness key signs checkpoints)")
    asyncio.run(main(parser.parse_args()))
