"""The seeds' P0.2.6 integration scenarios, end to end on memory, NATS and etcd.

Each test is one of the acceptance criteria of P0.2.6: capability matching
with various profiles, budget enforcement and the circuit breaker, help with
and without qualified swarms, and policy violations prevented — with the
coordinator, the governor and the witness wired together the way the CLI
wires them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from infrafabric.bus import EventBus
from infrafabric.coordinator import IFCoordinator
from infrafabric.errors import ConfigurationError, NotOwnerError, TaskNotFoundError
from infrafabric.fleet import assemble
from infrafabric.governor import MICROS, BreakerState, IFGovernor, ResourcePolicy, SwarmProfile, usd
from infrafabric.governor.policy import parse_policy
from infrafabric.witness import Witness


class Hook:
    """A real HTTP endpoint on loopback that records what is POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.got = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append({**json.loads(body), "content_type": self.headers["Content-Type"]})
                self.send_response(204)
                self.end_headers()
                hook.got.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/if"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


async def fleet(bus: EventBus, policy: ResourcePolicy | None = None
                ) -> tuple[IFCoordinator, IFGovernor, Witness]:
    fleet = assemble(bus, actor="test", signer=None)
    coord, gov, witness = fleet.coordinator, fleet.governor, fleet.witness
    if policy is not None:
        await gov.set_policy(policy, by="test")
    return coord, gov, witness


async def test_capability_matching(bus: EventBus) -> None:
    """The seeds' example: a SIP task goes to the SIP swarm, not the NDI one."""
    _, gov, _ = await fleet(bus)
    await gov.register_swarm(SwarmProfile(
        id="session-1-ndi", capabilities=["integration:ndi", "docs:technical-writing"],
        cost_per_hour_micros=usd("2.0"), reputation=Decimal("0.95"), model="haiku"),
        budget_micros=usd("10"))
    await gov.register_swarm(SwarmProfile(
        id="session-4-sip", capabilities=["integration:sip", "code-analysis:python"],
        cost_per_hour_micros=usd("2.0"), reputation=Decimal("0.90"), model="haiku"),
        budget_micros=usd("10"))
    swarm = await gov.find_qualified_swarm(["integration:sip"], max_cost=usd("5.0"))
    assert swarm is not None and swarm.id == "session-4-sip"
    # various profiles: a cheaper, equally covering swarm wins; too expensive is excluded
    await gov.register_swarm(SwarmProfile(id="sip-cheap", capabilities=["integration:sip"],
                                          cost_per_hour_micros=usd("1.0"), reputation=Decimal("0.9")))
    await gov.register_swarm(SwarmProfile(id="sip-gold", capabilities=["integration:sip"],
                                          cost_per_hour_micros=usd("9.0"), reputation=Decimal("1")))
    best = await gov.find_qualified_swarm(["integration:sip"], max_cost=usd("5.0"))
    assert best is not None and best.id == "sip-cheap"
    why = {c.swarm_id: c.excluded for c in await gov.explain_match(["integration:sip"], usd("5.0"))}
    assert why["sip-gold"] == "costs $9.00/h, more than $5.00/h"
    assert why["session-1-ndi"] is not None and "coverage 0%" in why["session-1-ndi"]
    # a tie on score is broken by swarm id, the same in every process
    await gov.register_swarm(SwarmProfile(id="sip-aaa", capabilities=["integration:sip"],
                                          cost_per_hour_micros=usd("1.0"), reputation=Decimal("0.9")))
    tied = await gov.find_qualified_swarm(["integration:sip"], max_cost=usd("5.0"))
    assert tied is not None and tied.id == "sip-aaa"
    # reputation (what the chassis's SLO tracking writes) moves the choice
    await gov.set_reputation("sip-aaa", Decimal("0.5"), by="slo")
    again = await gov.find_qualified_swarm(["integration:sip"], max_cost=usd("5.0"))
    assert again is not None and again.id == "sip-cheap"
    with pytest.raises(ConfigurationError):
        await gov.set_reputation("sip-aaa", Decimal("1.5"))
    with pytest.raises(TaskNotFoundError):
        await gov.set_reputation("ghost", Decimal("0.5"))
    assert await gov.find_qualified_swarm(["integration:h323"]) is None


async def test_budget_enforcement(bus: EventBus, hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    """Spend past the budget opens the breaker: claims refused, no pushes,
    escalated three ways; only a witnessed manual reset closes it."""
    caplog.set_level(logging.WARNING, logger="infrafabric")
    coord, gov, witness = await fleet(bus, ResourcePolicy(escalation_webhook=hook.url))
    await gov.register_swarm(SwarmProfile(id="spender", capabilities=["docs:markdown"]),
                             budget_micros=usd("1.00"))
    await coord.create_tasks([{"id": f"D{i}", "title": "doc", "capabilities": ["docs:markdown"]}
                              for i in range(3)])
    assert await coord.claim_task("spender", "D0")
    d0_claim = coord.last_claim.claim_id if coord.last_claim else None
    async with bus.subscribe("orchestrator/escalations") as escalations:
        await gov.track_cost("spender", "llm_call", usd("0.60"), task_id="D0")
        debit = await gov.track_cost("spender", "llm_call", usd("0.60"), task_id="D0")
        assert debit.tripped and debit.remaining_micros == -usd("0.20")
        report = json.loads((await escalations.get(5)).data)
    assert report["type"] == "circuit_breaker_open" and report["swarm_id"] == "spender"
    assert hook.got.wait(5) and hook.received[0]["content_type"] == "application/json"
    assert hook.received[0]["swarm_id"] == "spender" and "budget exhausted" in hook.received[0]["reason"]
    opened = [r for r in caplog.records if "circuit breaker OPEN for spender" in r.getMessage()]
    assert [(r.name, r.levelno) for r in opened] == [("infrafabric.governor.core", logging.WARNING)]
    assert "budget exhausted" in opened[0].getMessage()
    assert (await gov.breaker("spender")).state is BreakerState.OPEN
    assert not await coord.try_claim("spender", "D1")
    assert coord.last_claim is not None and "circuit breaker open" in coord.last_claim.reason
    assert await gov.route(await coord.get_task("D1"), await coord.list_swarms()) == []
    await coord.complete_task("spender", "D0", claim_id=d0_claim)  # finishing started work is allowed
    await gov.reset_circuit_breaker("spender", by="alice", budget_micros=usd("2.00"))
    assert await coord.try_claim("spender", "D1")
    ops = [(e.operation, e.params.get("by")) async for e in witness.entries()]
    assert ("circuit_breaker_tripped", "governor") in ops and ("circuit_breaker_reset", "alice") in ops
    assert ("escalation_webhook_sent", None) in ops
    assert (await witness.verify()).ok


async def test_gang_up_on_blocker(bus: EventBus) -> None:
    """A blocked swarm gets the best qualified helper per needed capability,
    at most max_swarms_per_task, never itself, and they are told."""
    coord, gov, witness = await fleet(bus, ResourcePolicy(max_swarms_per_task=2))
    for sid, caps, cost, rep in [("blocked", ["infra:networking"], 1, "1"),
                                 ("net-a", ["infra:networking"], 2, "1"),
                                 ("net-b", ["infra:networking"], 1, "0.9"),
                                 ("sec", ["security:audit"], 2, "1"),
                                 ("docs", ["docs:markdown"], 1, "1")]:
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=caps, cost_per_hour_micros=cost * MICROS,
                                              reputation=Decimal(rep)), budget_micros=usd("10"))
    await coord.create_tasks([{"id": "N1", "title": "fix TLS", "capabilities": ["infra:networking"]}])
    assert await coord.claim_task("blocked", "N1")
    async with bus.subscribe("swarms/net-b/help") as net_help, bus.subscribe("swarms/sec/help") as sec_help:
        report = await coord.detect_blocker("blocked", {
            "task": "N1", "message": "handshake fails",
            "capabilities": ["infra:networking", "security:audit", "docs:markdown"]})
        plan = report["help"]
        assert [h["swarm_id"] for h in plan["helpers"]] == ["net-b", "sec"]
        assert plan["skipped"] == ["docs:markdown: max_swarms_per_task (2) reached"]
        for feed in (net_help, sec_help):
            request = json.loads((await feed.get(5)).data)
            assert request["type"] == "help_request" and request["blocked_swarm_id"] == "blocked"
    ops = [e.operation async for e in witness.entries()]
    assert "blocker_detected" in ops and "help_requested" in ops


async def test_gang_up_escalates_when_nobody_qualifies(bus: EventBus, hook: Hook) -> None:
    """Nobody qualified (or only the blocked swarm itself, or only breakers
    open): a human is asked on the escalation subject and the webhook."""
    coord, gov, witness = await fleet(bus, ResourcePolicy(escalation_webhook=hook.url))
    await gov.register_swarm(SwarmProfile(id="alone", capabilities=["integration:sip"]),
                             budget_micros=usd("10"))
    await gov.register_swarm(SwarmProfile(id="tripped", capabilities=["integration:h323"]),
                             budget_micros=usd("10"))
    await gov.trip("tripped", "test", by="test")
    hook.got.clear()
    hook.received.clear()
    async with bus.subscribe("orchestrator/escalations") as escalations:
        report = await coord.detect_blocker(
            "alone", {"capabilities": ["integration:sip", "integration:h323"]})
        assert report["help"]["escalated"] and report["help"]["helpers"] == []
        assert json.loads((await escalations.get(5)).data)["type"] == "human_needed"
    assert hook.got.wait(5) and hook.received[-1]["type"] == "human_needed"
    assert hook.received[-1]["reason"] == "no qualified swarm can help"
    assert "escalated_to_human" in [e.operation async for e in witness.entries()]


async def test_policy_violation_prevention(bus: EventBus) -> None:
    """An assignment that breaks the policy is refused before any money is
    spent, and every violation is witnessed."""
    coord, gov, witness = await fleet(bus, parse_policy(
        "resource_policy:\n  max_cost_per_task: '5.00'\n  min_capability_match: 1\n"
        "  max_swarms_per_task: 1\n"))
    await gov.register_swarm(SwarmProfile(id="half", capabilities=["code-analysis:python"],
                                          cost_per_hour_micros=usd("1")), budget_micros=usd("10"))
    await gov.register_swarm(SwarmProfile(id="gold", capabilities=["code-analysis:python", "testing:unit"],
                                          cost_per_hour_micros=usd("8")), budget_micros=usd("10"))
    await coord.create_tasks([{"id": "P1", "title": "t", "estimate_hours": "1",
                               "capabilities": ["code-analysis:python", "testing:unit"]}])
    assert not await coord.try_claim("half", "P1")  # covers 50 %, the policy wants 100 %
    assert coord.last_claim is not None and "coverage 50% below 100%" in coord.last_claim.reason
    task = await coord.get_task("P1")
    problems = await gov.validate_assignment("gold", task)
    assert problems == ["estimated $8.00 exceeds max_cost_per_task $5.00"]
    plan = await gov.request_help_for_blocker("half", {"task": "P1", "capabilities": ["testing:unit"]})
    assert plan["helpers"] == [] and plan["escalated"]
    assert any("exceeds max_cost_per_task" in s for s in plan["skipped"])
    entries = [e async for e in witness.entries()]
    assert any(e.operation == "policy_violation" and e.params["swarm_id"] == "gold" for e in entries)
    assert any(e.operation == "policy_violation_avoided" for e in entries)
    gold = await gov.budget("gold")
    assert gold is not None and gold.spent_micros == 0
    with pytest.raises(NotOwnerError):
        await coord.complete_task("half", "P1")


async def test_a_failing_webhook_never_blocks_the_trip(bus: EventBus,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="infrafabric")
    seen: list[str] = []

    async def observe(op: str, params: dict[str, Any]) -> None:
        seen.append(op)

    gov = IFGovernor(bus, observers=[observe])
    await gov.set_policy(ResourcePolicy(escalation_webhook="http://127.0.0.1:9/nobody-listens"))
    await gov.register_swarm(SwarmProfile(id="s"), budget_micros=1)
    assert (await gov.track_cost("s", "llm_call", 2)).tripped
    assert (await gov.breaker("s")).state is BreakerState.OPEN
    assert "escalation_webhook_failed" in seen
    failed = [r for r in caplog.records if "escalation webhook http://127.0.0.1:9/nobody-listens failed"
              in r.getMessage()]
    assert [(r.name, r.levelno) for r in failed] == [("infrafabric.governor.core", logging.WARNING)]
    assert "circuit_breaker_open escalation of swarm s" in failed[0].getMessage()
