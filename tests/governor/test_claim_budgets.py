"""Budgets govern what a swarm takes, not only what it spends (issue [7/9] point 4).

A claim is refused when its estimated cost (cost per hour x estimate, 1 h
when none) is above the policy's ``max_cost_per_task``, the task's own
budget, or what is left of the swarm's budget; a claim that is admitted
holds its estimate against the budget until it ends, and costs tracked for
its task are drawn from that hold. On memory, NATS and etcd, and across OS
processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from infrafabric.bus import EventBus
from infrafabric.coordinator import IFCoordinator
from infrafabric.fleet import assemble
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile, usd

WORKER = Path(__file__).with_name("claim_worker.py")


async def fleet(bus: EventBus, *, rate: str, budget: str | None,
                cap: str = "10") -> tuple[IFCoordinator, IFGovernor]:
    f = assemble(bus, actor="test", signer=None)
    await f.governor.set_policy(ResourcePolicy(max_cost_per_task_micros=usd(cap)), by="test")
    await f.governor.register_swarm(SwarmProfile(id="s1", capabilities=["code-analysis:python"],
                                                 cost_per_hour_micros=usd(rate)),
                                    budget_micros=None if budget is None else usd(budget))
    return f.coordinator, f.governor


async def test_max_cost_per_task_and_the_tasks_budget_refuse_claims(bus: EventBus) -> None:
    """The seeds' policy: a $10/h swarm may not take a 2-hour task under a $5 cap."""
    coord, _ = await fleet(bus, rate="10", budget=None, cap="5")
    await coord.create_task({"id": "long", "title": "two hours", "estimate_hours": "2"})
    await coord.create_task({"id": "short", "title": "half an hour", "estimate_hours": "0.5"})
    await coord.create_task({"id": "unestimated", "title": "no estimate"})
    long = await coord.try_claim("s1", "long")
    assert not long.won
    assert long.reason == "estimated $20.00 (2 h at $10.00/h) exceeds max_cost_per_task $5.00"
    unestimated = await coord.try_claim("s1", "unestimated")  # 1 h is assumed: $10 > $5
    assert not unestimated.won and "(1 h, no estimate given at $10.00/h)" in unestimated.reason
    assert (await coord.try_claim("s1", "short")).won


async def test_a_tasks_own_budget_refuses_a_dearer_swarm(bus: EventBus) -> None:
    coord, _ = await fleet(bus, rate="4", budget=None)
    await coord.create_task({"id": "t", "title": "t", "estimate_hours": "1", "budget_micros": usd("3")})
    out = await coord.try_claim("s1", "t")
    assert not out.won and out.reason == "estimated $4.00 (1 h at $4.00/h) exceeds the task's budget $3.00"


async def test_claims_hold_their_estimate_until_they_end(bus: EventBus) -> None:
    """$25 at $10/h: two 1-hour claims hold $20, a third is refused until one ends;
    costs tracked for a claimed task are drawn from its hold, the rest comes back."""
    coord, gov = await fleet(bus, rate="10", budget="25")
    for i in range(5):
        await coord.create_task({"id": f"t{i}", "title": f"task {i}", "estimate_hours": "1"})
    a, b = await coord.try_claim("s1", "t0"), await coord.try_claim("s1", "t1")
    assert a.won and b.won
    assert any("held $10.00 of the budget" in c for c in a.checks)
    third = await coord.try_claim("s1", "t2")
    assert not third.won and "exceeds the $5.00 left" in third.reason
    budget = await gov.budget("s1")
    assert budget is not None and budget.reserved_micros == usd("20") and len(budget.holds) == 2
    assert await coord.policy.stopped("s1") is None  # held, not spent: the swarm is not stopped

    await gov.track_cost("s1", "llm_call", usd("4"), task_id="t0")  # drawn from t0's hold
    budget = await gov.budget("s1")
    assert budget is not None
    assert (budget.spent_micros, budget.reserved_micros, budget.remaining_micros) == (usd("4"), usd("16"),
                                                                                      usd("5"))
    await coord.complete_task("s1", "t0", claim_id=a.claim_id)  # the rest of its hold comes back
    budget = await gov.budget("s1")
    assert budget is not None and budget.reserved_micros == usd("10") and budget.remaining_micros == usd("11")
    assert (await coord.try_claim("s1", "t2")).won
    await coord.release_task("s1", "t1", b.claim_id)
    budget = await gov.budget("s1")
    assert budget is not None and list(h.task_id for h in budget.holds.values()) == ["t2"]


async def test_one_dollar_left_takes_no_ten_hour_task(bus: EventBus) -> None:
    """The issue's case: $1 left at $10/h claimed five 10-hour tasks at once."""
    coord, gov = await fleet(bus, rate="10", budget="101", cap="1000")
    await gov.track_cost("s1", "earlier work", usd("100"))
    for i in range(5):
        await coord.create_task({"id": f"t{i}", "title": f"task {i}", "estimate_hours": "10"})
    outcomes = await asyncio.gather(*(coord.try_claim("s1", f"t{i}") for i in range(5)))
    assert not any(o.won for o in outcomes)
    assert all("exceeds the $1.00 left" in o.reason for o in outcomes)
    budget = await gov.budget("s1")
    assert budget is not None and budget.holds == {} and budget.reserved_micros == 0


async def test_a_dry_run_holds_nothing_and_a_lapsed_claim_gives_its_hold_back(bus: EventBus) -> None:
    coord, gov = await fleet(bus, rate="1", budget="5")
    await coord.create_task({"id": "t", "title": "t", "estimate_hours": "2"})
    assert (await coord.try_claim("s1", "t", dry_run=True)).won
    budget = await gov.budget("s1")
    assert budget is not None and budget.reserved_micros == 0
    won = await coord.try_claim("s1", "t", lease_ttl=0.5)
    assert won.won
    await asyncio.sleep(0.6)
    assert await coord.expire_lease("t") is not None
    budget = await gov.budget("s1")
    assert budget is not None and budget.holds == {} and budget.reserved_micros == 0


async def test_a_hold_whose_claim_never_landed_is_given_back(bus: EventBus) -> None:
    """A process that died between the hold and the claim's compare-and-swap
    leaves a hold nobody releases: it is given back once it stands in the way."""
    now = [1000.0]
    f = assemble(bus, actor="test", signer=None, clock=lambda: now[0])
    coord, gov = f.coordinator, f.governor
    await gov.register_swarm(SwarmProfile(id="s1", cost_per_hour_micros=usd("3")), budget_micros=usd("4"))
    await coord.create_task({"id": "t", "title": "t", "estimate_hours": "1"})
    await coord.create_task({"id": "u", "title": "u", "estimate_hours": "1"})
    # what a dead claimant left: a hold on "t", whose claim never landed
    assert await gov._hold("s1", "dead-claim", "t", usd("3")) == (True, usd("1"))
    assert not (await coord.try_claim("s1", "u")).won  # too young to be judged stale
    now[0] += 61
    won = await coord.try_claim("s1", "u")
    assert won.won, won.reason
    budget = await gov.budget("s1")
    assert budget is not None and set(budget.holds) == {won.claim_id}


def test_claims_racing_across_processes_never_hold_more_than_the_budget(bus_url: str) -> None:
    """4 processes, one swarm with $30 at $10/h, 12 one-hour tasks: at most
    three claims win, whoever makes them, and the budget holds exactly theirs.
    (Fewer may win in the race: an attempt holds its estimate before its
    claim's compare-and-swap, and one that then loses the task gives it back
    after others were refused; a claim made afterwards gets it.)"""
    async def setup() -> None:
        from infrafabric.bus import connect
        async with connect(bus_url) as bus:
            coord, _ = await fleet(bus, rate="10", budget="30")
            await coord.create_tasks([{"id": f"t{i:02d}", "title": f"task {i}",
                                       "estimate_hours": Decimal("1")} for i in range(12)])

    if bus_url.startswith("memory"):
        return  # the memory bus lives in one process; the other backends are raced
    asyncio.run(setup())
    procs = [subprocess.Popen([sys.executable, str(WORKER), bus_url, "s1", "12", str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        won = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            won += out.split()[1:]
            assert p.returncode == 0
    finally:
        for p in procs:
            p.kill()
    assert 1 <= len(won) <= 3 and len(set(won)) == len(won)

    async def check() -> None:
        from infrafabric.bus import connect
        async with connect(bus_url) as bus:
            gov = IFGovernor(bus)
            budget = await gov.budget("s1")
            assert budget is not None and budget.reserved_micros == usd("10") * len(won)
            assert sorted(h.task_id for h in budget.holds.values()) == sorted(won)  # no hold left behind
            coord = assemble(bus, actor="test", signer=None).coordinator
            later = [o for o in [await coord.try_claim("s1", f"t{i:02d}") for i in range(12)] if o.won]
            assert len(won) + len(later) == 3  # the budget, fully used once the race is over
            budget = await gov.budget("s1")
            assert budget is not None and budget.reserved_micros == usd("30") and budget.remaining_micros == 0

    asyncio.run(check())


async def test_a_claim_taken_over_after_its_lease_lapsed_gives_its_hold_back(bus: EventBus) -> None:
    coord, gov = await fleet(bus, rate="1", budget="5")
    await gov.register_swarm(SwarmProfile(id="s2", cost_per_hour_micros=usd("1")), budget_micros=usd("5"))
    await coord.create_task({"id": "t", "title": "t", "estimate_hours": "2"})
    first = await coord.try_claim("s1", "t", lease_ttl=0.5)
    assert first.won
    await asyncio.sleep(0.6)
    second = await coord.try_claim("s2", "t")
    assert second.won and any("lapsed" in c for c in second.checks)
    s1, s2 = await gov.budget("s1"), await gov.budget("s2")
    assert s1 is not None and s1.holds == {} and s1.reserved_micros == 0
    assert s2 is not None and set(s2.holds) == {second.claim_id} and s2.reserved_micros == usd("2")
