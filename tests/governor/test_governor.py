"""The governor on memory, NATS and etcd (real servers)."""

from __future__ import annotations

import asyncio
import logging
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.coordinator import IFCoordinator
from infrafabric.errors import ConfigurationError
from infrafabric.governor import (
    MICROS,
    BreakerState,
    IFGovernor,
    ResourcePolicy,
    SwarmProfile,
    format_usd,
    usd,
)
from support import start_together

WORKER = str(Path(__file__).with_name("debit_worker.py"))


def test_money_is_exact_and_never_float() -> None:
    assert usd("2.50") == 2_500_000 and usd("$0.000001") == 1 and usd(3) == 3 * MICROS
    assert sum(usd("0.1") for _ in range(10)) == usd("1.0")  # 0.1 * 10 == 1 exactly
    assert format_usd(1_234_500) == "$1.2345" and format_usd(2 * MICROS) == "$2.00"
    for bad in ("abc", "1.0000001", "nan"):
        with pytest.raises(ConfigurationError):
            usd(bad)


async def test_find_qualified_swarm_scores_and_explains(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    for sid, caps, cost, rep in [
        ("cheap-py", ["code-analysis:python"], 1, "0.9"),
        ("pricey-py", ["code-analysis:python", "testing:integration"], 4, "1.0"),
        ("rust", ["code-analysis:rust"], 1, "1.0"),
        ("broke-py", ["code-analysis:python"], 1, "1.0"),
    ]:
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=caps, cost_per_hour_micros=cost * MICROS,
                                              reputation=Decimal(rep)), budget_micros=10 * MICROS)
    await gov.set_budget("broke-py", 0)
    best = await gov.find_qualified_swarm(["code-analysis:python"])
    assert best is not None and best.id == "cheap-py"  # 1.0*0.9/1 beats 1.0*1.0/4; broke-py has no budget
    explained = {c.swarm_id: c for c in await gov.explain_match(["code-analysis:python"], 2 * MICROS)}
    assert explained["rust"].excluded and "coverage 0%" in explained["rust"].excluded
    assert explained["pricey-py"].excluded and "more than $2.00/h" in explained["pricey-py"].excluded
    assert explained["broke-py"].excluded == "no budget left"
    await gov.register_swarm(SwarmProfile(id="unmetered", capabilities=["wasm:runtime"]))
    unmetered = await gov.find_qualified_swarm(["wasm:runtime"])  # no budget set: not limited
    assert unmetered is not None and unmetered.id == "unmetered"
    assert await gov.find_qualified_swarm(["integration:sip"]) is None
    # coverage, not Jaccard: extra capabilities never lower a match
    both = await gov.find_qualified_swarm(["code-analysis:python", "testing:integration"])
    assert both is not None and both.id == "pricey-py"


async def test_debits_trip_the_breaker_and_overshoot_is_one_operation(bus: EventBus) -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    async def observe(op: str, params: dict[str, object]) -> None:
        seen.append((op, params))

    gov = IFGovernor(bus, observers=[observe])
    await gov.register_swarm(SwarmProfile(id="s"), budget_micros=usd("1.00"))
    async with bus.subscribe("orchestrator/escalations") as escalations:
        for _ in range(3):
            debit = await gov.track_cost("s", "llm_call", usd("0.30"))
            assert not debit.tripped
        last = await gov.track_cost("s", "llm_call", usd("0.30"))
        assert last.tripped and last.remaining_micros == -usd("0.20")  # over by < one operation
        alert = await escalations.get(5)
    assert b"circuit_breaker_open" in alert.data
    breaker = await gov.breaker("s")
    assert breaker.state is BreakerState.OPEN and "budget exhausted" in breaker.reason
    budget = await gov.budget("s")
    assert budget is not None and budget.limit_micros == usd("1.00")  # never zeroed
    assert not await gov.reserve("s", 1)
    assert [e["cost_micros"] for e in await gov.ledger()] == [usd("0.30")] * 4
    await gov.reset_circuit_breaker("s", by="alice", budget_micros=usd("5"))
    assert (await gov.breaker("s")).state is BreakerState.CLOSED
    assert ("circuit_breaker_reset", {"swarm_id": "s", "by": "alice", "budget_micros": usd("5")}) in seen
    assert await gov.reserve("s", usd("4.99")) and not await gov.reserve("s", usd("0.02"))


async def test_consecutive_failures_trip_the_breaker(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    await gov.set_policy(ResourcePolicy(circuit_breaker_failure_threshold=3))
    await gov.register_swarm(SwarmProfile(id="flaky"), budget_micros=MICROS)
    await gov.record_outcome("flaky", success=False)
    await gov.record_outcome("flaky", success=True)  # resets the count
    for _ in range(2):
        assert (await gov.record_outcome("flaky", success=False)).state is BreakerState.CLOSED
    assert (await gov.record_outcome("flaky", success=False)).state is BreakerState.OPEN


async def test_a_breaker_opening_is_logged_as_a_warning(bus: EventBus,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Reported on the library's logger (the CLI shows it on stderr), never printed:
    once, when it opens, naming the swarm and the reason."""
    caplog.set_level(logging.DEBUG, logger="infrafabric")
    gov = IFGovernor(bus)
    await gov.set_policy(ResourcePolicy(circuit_breaker_failure_threshold=2))
    await gov.register_swarm(SwarmProfile(id="flaky"), budget_micros=MICROS)
    for _ in range(2):
        await gov.record_outcome("flaky", success=False)
    assert await gov.trip("other", "manual: looping", by="alice")
    assert not await gov.trip("other", "manual: again", by="alice")  # already open: nothing to say
    opened = [(r.name, r.levelno, r.getMessage()) for r in caplog.records
              if "circuit breaker" in r.getMessage()]
    warning = ("infrafabric.governor.core", logging.WARNING)
    assert opened == [(*warning, "circuit breaker OPEN for flaky: 2 consecutive failures"),
                      (*warning, "circuit breaker OPEN for other: manual: looping")]


async def test_failed_tasks_of_a_governed_coordinator_trip_the_breaker(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    coord = IFCoordinator(bus, policy=gov, max_attempts=10)
    await gov.set_policy(ResourcePolicy(circuit_breaker_failure_threshold=2))
    await gov.register_swarm(SwarmProfile(id="s", capabilities=["docs:markdown"]), budget_micros=MICROS)
    await coord.create_tasks([{"id": "F", "title": "t", "capabilities": ["docs:markdown"]}])
    assert await coord.claim_task("s", "F")
    await coord.fail_task("s", "F", "boom")
    assert await coord.claim_task("s", "F")
    await coord.complete_task("s", "F")  # a success resets the count
    assert (await gov.breaker("s")).consecutive_failures == 0
    await coord.create_tasks([{"id": f"G{i}", "title": "t", "capabilities": ["docs:markdown"]}
                              for i in (1, 2)])
    for tid in ("G1", "G2"):
        assert await coord.claim_task("s", tid)
        await coord.fail_task("s", tid, "boom")
    assert (await gov.breaker("s")).state is BreakerState.OPEN
    assert not await coord.claim_task("s", "G1")


async def test_claims_go_through_the_governor(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    coord = IFCoordinator(bus, policy=gov)
    await gov.register_swarm(SwarmProfile(id="s", capabilities=["code-analysis:python"]),
                             budget_micros=usd("1"))
    await coord.register_swarm("stranger", ["code-analysis:python"])  # known to the board only
    await coord.create_tasks([{"id": f"T{i}", "title": "t", "capabilities": ["code-analysis:python"]}
                              for i in range(3)])
    assert await coord.claim_task("stranger", "T0")  # known to the board only: unmetered
    await gov.trip("stranger", "testing", by="test")  # but its breaker still applies
    assert not await coord.claim_task("stranger", "T2")
    assert await coord.claim_task("s", "T0") is False  # already claimed by the stranger
    await coord.release_task("stranger", "T0")
    assert await coord.claim_task("s", "T0")
    await gov.trip("s", "testing", by="test")
    assert not await coord.claim_task("s", "T1")
    assert "circuit breaker open: testing" in coord.last_claim.reason
    await gov.reset_circuit_breaker("s", by="test")
    await gov.track_cost("s", "llm_call", usd("1"))  # exactly exhausted
    assert not await coord.claim_task("s", "T1")
    assert "budget exhausted" in coord.last_claim.reason


async def test_a_debit_and_its_ledger_entry_never_part(bus: EventBus) -> None:
    from infrafabric.bus.layout import LEDGER
    from infrafabric.governor.core import JOURNAL
    from infrafabric.governor.models import LedgerEntry

    gov = IFGovernor(bus)
    await gov.register_swarm(SwarmProfile(id="s"), budget_micros=usd("100"))
    for i in range(3 * JOURNAL):
        await gov.track_cost("s", "op", 1_000 + i)
    budget = await gov.budget("s")
    assert budget is not None and JOURNAL < len(budget.journal) <= 2 * JOURNAL
    assert len(await bus.list(LEDGER)) == 3 * JOURNAL
    # a process that dies between its debit and writing the ledger key: the entry is in the journal
    await gov._debit("s", LedgerEntry(key=f"{LEDGER}99999999999999999999-dead", swarm_id="s", operation="op",
                                      cost_micros=7, at=0.0, remaining_micros=0), 0)
    ledger = await gov.ledger()
    budget = await gov.budget("s")
    assert budget is not None and len(ledger) == 3 * JOURNAL + 1
    assert sum(e["cost_micros"] for e in ledger) == budget.spent_micros
    assert len(await bus.list(LEDGER)) == 3 * JOURNAL


async def test_concurrent_debits_in_one_process_are_exact(bus_url: str) -> None:
    buses = [await connect(bus_url) for _ in range(4)]
    try:
        govs = [IFGovernor(b) for b in buses]
        await govs[0].register_swarm(SwarmProfile(id="s"), budget_micros=usd("1000"))
        await asyncio.gather(*(g.track_cost("s", "op", 1_234) for g in govs for _ in range(50)))
        budget = await govs[0].budget("s")
        assert budget is not None and budget.spent_micros == 200 * 1_234
    finally:
        for b in buses:
            await b.close()


def _race(url: str, n: int, cost: int, *extra: str) -> list[int]:
    """Four debit_worker processes started together; the debits each made."""
    procs = start_together([[sys.executable, WORKER, url, "s", str(n), str(cost), *extra]] * 4)
    made = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and out.startswith("done"), err
        made.append(int(out.split()[1]))
    return made


async def test_four_processes_debit_exactly(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        gov = IFGovernor(bus)
        await gov.register_swarm(SwarmProfile(id="s"), budget_micros=usd("10000"))
        assert await asyncio.to_thread(_race, engine_url, 250, 3333) == [250] * 4
        budget = await gov.budget("s")
        assert budget is not None
        assert budget.spent_micros == 4 * 250 * 3333  # not one update lost
        assert budget.remaining_micros == usd("10000") - 4 * 250 * 3333
        assert len(await gov.ledger()) == 1000


async def test_four_processes_reserving_never_overshoot(engine_url: str) -> None:
    """Reserve-then-commit across processes: the budget is used up to the last
    whole operation and never crossed, so the breaker never needs to trip."""
    async with connect(engine_url) as bus:
        gov = IFGovernor(bus)
        await gov.register_swarm(SwarmProfile(id="s"), budget_micros=usd("1.00"))
        made = await asyncio.to_thread(_race, engine_url, 40, usd("0.03"), "reserve")
        budget = await gov.budget("s")
        assert budget is not None
        assert sum(made) == 33 and budget.spent_micros == 33 * usd("0.03")  # $0.99 of $1.00
        assert budget.reserved_micros == 0 and budget.remaining_micros == usd("0.01")
        assert (await gov.breaker("s")).state is BreakerState.CLOSED
        assert len(await gov.ledger()) == 33


async def test_pushes_go_to_qualified_swarms_best_first(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    coord = IFCoordinator(bus, policy=gov)
    for sid, cost in [("pricey", 5), ("cheap", 1), ("tripped", 1)]:
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=["docs:markdown"],
                                              cost_per_hour_micros=cost * MICROS), budget_micros=10 * MICROS)
    await gov.register_swarm(SwarmProfile(id="coder", capabilities=["code-analysis:rust"]),
                             budget_micros=MICROS)
    await gov.trip("tripped", "testing", by="test")
    pushed: dict[str, list[str]] = {}
    feeds = {s: coord.pushed_tasks(s) for s in ("pricey", "cheap", "tripped", "coder")}
    for f in feeds.values():
        await f.__aenter__()
    task = await coord.create_task({"id": "D1", "title": "docs", "capabilities": ["docs:markdown"]})
    assert await gov.route(task, await coord.list_swarms()) == ["cheap", "pricey"]
    for s in ("cheap", "pricey"):
        pushed[s] = [(await feeds[s].get(5)).id]
    assert pushed == {"cheap": ["D1"], "pricey": ["D1"]}
    # a swarm whose budget cannot cover the task's estimated cost is pushed nothing
    await gov.set_budget("pricey", 4 * MICROS)
    assert await gov.route(task, await coord.list_swarms()) == ["cheap"]
    for s in ("tripped", "coder"):  # open breaker or not qualified: no push
        with pytest.raises(TimeoutError):
            await feeds[s].get(0.3)
    for f in feeds.values():
        await f.close()


async def test_blocker_gets_helpers_or_a_human(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    coord = IFCoordinator(bus, policy=gov)
    await gov.set_policy(ResourcePolicy(max_swarms_per_task=2, max_cost_per_task_micros=usd("3")))
    for sid, caps, cost in [("blocked", ["infra:networking"], 1), ("net", ["infra:networking"], 1),
                            ("sec", ["security:audit"], 2), ("gold", ["security:audit"], 9)]:
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=caps, cost_per_hour_micros=cost * MICROS),
                                 budget_micros=usd("10"))
    async with bus.subscribe("swarms/net/help") as net_help, \
            bus.subscribe("orchestrator/escalations") as escalations:
        report = await coord.detect_blocker("blocked", {
            "message": "TLS handshake fails", "capabilities": ["infra:networking", "security:audit"]})
        plan = report["help"]
        assert [h["swarm_id"] for h in plan["helpers"]] == ["net", "sec"] and not plan["escalated"]
        assert b"help_request" in (await net_help.get(5)).data
        nobody = await coord.detect_blocker("blocked", {"capabilities": ["wasm:runtime"]})
        assert nobody["help"]["escalated"] and nobody["help"]["helpers"] == []
        assert b"human_needed" in (await escalations.get(5)).data


async def test_a_blocker_asks_live_helpers_before_better_scored_dead_ones(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    coord = IFCoordinator(bus, policy=gov)
    await gov.set_policy(ResourcePolicy(max_swarms_per_task=1))
    for sid, cost in [("blocked", 1), ("cheap-dead", 1), ("dear-live", 5)]:
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=["infra:networking"],
                                              cost_per_hour_micros=cost * MICROS))
    report = await coord.detect_blocker("blocked", {"capabilities": ["infra:networking"]})
    assert [(h["swarm_id"], h["live"]) for h in report["help"]["helpers"]] == [("cheap-dead", False)]
    async with coord.present("dear-live", via="mcp"):  # its agent is connected: it hears the request
        report = await coord.detect_blocker("blocked", {"capabilities": ["infra:networking"]})
    assert [(h["swarm_id"], h["live"]) for h in report["help"]["helpers"]] == [("dear-live", True)]


async def test_validate_assignment_names_every_violation(bus: EventBus) -> None:
    from infrafabric.coordinator import Task

    gov = IFGovernor(bus)
    await gov.set_policy(ResourcePolicy(max_cost_per_task_micros=usd("10")))
    await gov.register_swarm(SwarmProfile(id="s", capabilities=["docs:markdown"],
                                          cost_per_hour_micros=usd("4")), budget_micros=usd("6"))
    ok = Task(id="t1", title="t", capabilities=["docs:markdown"], estimate_hours=Decimal("1.5"))
    assert await gov.validate_assignment("s", ok) == []
    bad = Task(id="t2", title="t", capabilities=["security:audit"], estimate_hours=Decimal("3"),
               budget_micros=usd("5"))
    problems = await gov.validate_assignment("s", bad)
    assert len(problems) == 4, problems  # coverage, max_cost_per_task, task budget, swarm budget
    assert "$12.00 exceeds max_cost_per_task $10.00" in " ".join(problems)
    assert await gov.validate_assignment("ghost", ok) == ["swarm ghost has no governor profile"]
