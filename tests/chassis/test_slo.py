"""SLO tracking and reputation on memory, NATS and etcd (real servers)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.chassis.models import ServiceLevelObjective
from infrafabric.chassis.reputation import ReputationSystem
from infrafabric.chassis.slo import SLOTracker, fraction_to_decimal, p99_nearest_rank
from infrafabric.errors import ConfigurationError, TaskNotFoundError
from infrafabric.governor import IFGovernor, SwarmProfile
from support import Clock, Seen

WORKER = str(Path(__file__).with_name("creds_worker.py"))
SLO = ServiceLevelObjective(p99_latency_ms=100, success_rate=Decimal("0.95"), availability=Decimal("0.9"),
                            window_seconds=60)


def test_p99_is_nearest_rank() -> None:
    assert p99_nearest_rank([]) is None
    assert p99_nearest_rank([7.5]) == 7.5
    assert p99_nearest_rank([3, 1, 2]) == 3
    assert p99_nearest_rank(range(1, 101)) == 99  # not the maximum (the seeds' off-by-one)
    assert p99_nearest_rank(range(1, 102)) == 100
    assert p99_nearest_rank(range(1, 1001)) == 990
    assert fraction_to_decimal(Fraction(1, 7)) == Decimal("0.1429")
    assert fraction_to_decimal(Fraction(1, 20000)) == Decimal("0.0000")  # half-even
    assert fraction_to_decimal(Fraction(3, 20000)) == Decimal("0.0002")


async def test_compliance_on_known_data(bus: EventBus) -> None:
    clock = Clock()
    tracker = SLOTracker(bus, clock=clock)
    assert await tracker.slo("s") == ServiceLevelObjective() and not await tracker.has_slo("s")
    await tracker.set_slo("s", SLO)
    assert await tracker.slo("s") == SLO and await tracker.has_slo("s")
    empty = await tracker.calculate_slo_compliance("s")
    assert empty.samples == 0 and empty.success_rate is None and empty.p99_latency_ms is None
    assert empty.overall_compliant and empty.violations == []
    await tracker.record_metric("s", 250, False, task_id="T0", reason="trap")
    one = await tracker.calculate_slo_compliance("s")
    assert one.samples == 1 and one.success_rate == 0 and one.p99_latency_ms == 250
    assert one.violations == ["success_rate", "p99_latency"] and one.availability == 1
    clock.now += 61  # that sample leaves the window
    for i in range(1, 101):
        clock.now += 0.01
        await tracker.record_metric("s", i, i % 20 != 0)
    hundred = await tracker.calculate_slo_compliance("s")
    assert hundred.samples == 100 and hundred.successes == 95
    assert hundred.success_rate == Fraction(95, 100) and hundred.success_rate_compliant  # 0.95 >= 0.95
    assert hundred.p99_latency_ms == 99 and hundred.p99_latency_compliant
    assert hundred.overall_compliant
    summary = hundred.as_dict()
    assert summary["success_rate"] == "0.9500" and summary["p99_latency_ms"] == 99
    assert summary["availability"] == "1.0000" and summary["overall_compliant"] is True
    assert len(await tracker.samples("s")) == 101
    assert await tracker.prune("s") == 1 and len(await tracker.samples("s")) == 100
    assert await tracker.swarms() == ["s"]


async def test_window_boundary_and_availability(bus: EventBus) -> None:
    clock = Clock()
    tracker = SLOTracker(bus, clock=clock)
    await tracker.set_slo("s", SLO)
    await tracker.record_metric("s", 10, True)
    clock.now += 59.75
    assert (await tracker.calculate_slo_compliance("s")).samples == 1
    clock.now += 0.25  # exactly window_seconds old: outside
    assert (await tracker.calculate_slo_compliance("s")).samples == 0
    for _ in range(8):
        await tracker.record_metric("s", 10, True)
    for _ in range(2):
        await tracker.record_metric("s", None, False, available=False, reason="breaker open")
    c = await tracker.calculate_slo_compliance("s")
    assert c.availability == Fraction(8, 10) and not c.availability_compliant
    assert c.latency_samples == 8 and c.p99_latency_ms == 10
    assert c.violations == ["success_rate", "availability"]
    with pytest.raises(ConfigurationError, match="unavailable"):
        await tracker.record_metric("s", None, True, available=False)
    for bad in (-1, float("nan"), float("inf"), True, "5"):
        with pytest.raises(ConfigurationError, match="latency_ms"):
            await tracker.record_metric("s", bad, True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="swarm_id"):
        await tracker.record_metric("a/b", 1, True)


async def test_violations_are_witnessed_on_change(bus: EventBus) -> None:
    clock, seen = Clock(), Seen()
    tracker = SLOTracker(bus, clock=clock, observers=[seen])
    await tracker.set_slo("s", SLO, by="test")
    await tracker.record_metric("s", 10, True)
    await tracker.calculate_slo_compliance("s")
    assert seen.ops("slo_violation") == []
    await tracker.record_metric("s", 500, False)
    await tracker.calculate_slo_compliance("s")
    await tracker.calculate_slo_compliance("s")  # unchanged: reported once
    [violation] = seen.ops("slo_violation")
    assert violation["swarm_id"] == "s" and violation["newly_violated"] == ["success_rate", "p99_latency"]
    assert violation["success_rate"] == "0.5000"
    other = Seen()  # another tracker (a process) sees the same status: no duplicate report
    await SLOTracker(bus, clock=clock, observers=[other]).calculate_slo_compliance("s")
    assert other.calls == []
    clock.now += 60
    await tracker.calculate_slo_compliance("s")
    [recovered] = seen.ops("slo_recovered")
    assert recovered["recovered"] == ["success_rate", "p99_latency"] and recovered["samples"] == 0
    assert [op for op, _ in seen.calls] == ["slo_set", "slo_violation", "slo_recovered"]


async def test_four_processes_record_concurrently(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        tracker = SLOTracker(bus)
        await tracker.set_slo("s", SLO)
        procs = [subprocess.Popen([sys.executable, WORKER, engine_url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        try:
            for p in procs:
                assert p.stdout is not None and await asyncio.to_thread(p.stdout.readline) == "ready\n"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("record s 50\nquit\n")
                p.stdin.flush()
            for p in procs:
                out, err = await asyncio.to_thread(p.communicate, timeout=60)
                assert p.returncode == 0 and out.strip() == "recorded 50", err
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        c = await tracker.calculate_slo_compliance("s")
        assert c.samples == 200 and c.successes == 180  # every sample counted
        assert c.success_rate == Fraction(9, 10) and c.p99_latency_ms == 49


async def test_reputation_formula(bus: EventBus) -> None:
    clock = Clock()
    tracker = SLOTracker(bus, clock=clock)
    rep = ReputationSystem(tracker)
    assert await rep.calculate_reputation("new") == Decimal("1.0000")  # benefit of the doubt
    cases = [  # (successes, failures, latency ms) -> reputation
        ((20, 0, 10), "1.0000"),                 # everything met
        ((24, 1, 10), "0.9600"),                 # 0.96 >= 0.95: only weighted by the rate
        ((9, 1, 10), "0.7200"),                  # 0.8 x 0.9
        ((20, 0, 500), "0.9000"),                # 0.9 x 1.0
        ((2, 1, 500), "0.4800"),                 # 0.8 x 0.9 x 2/3, exactly
        ((1, 6, 10), "0.1143"),                  # 0.8 x 1/7 = 0.114285...
        ((0, 3, 10), "0.0000"),
    ]
    for i, ((ok, bad, latency), expected) in enumerate(cases):
        swarm = f"s{i}"
        await tracker.set_slo(swarm, SLO)
        for n in range(ok + bad):
            await tracker.record_metric(swarm, latency, n < ok)
        value = await rep.calculate_reputation(swarm)
        assert value == Decimal(expected), (swarm, value)
        assert str(value) == expected and await rep.get_reputation(swarm) == value
    assert await rep.get_reputation("never") == Decimal("1.0000")


async def test_history_sink_and_decay(bus: EventBus) -> None:
    clock, seen = Clock(), Seen()
    tracker = SLOTracker(bus, clock=clock)
    sunk: list[tuple[str, Decimal]] = []

    async def sink(swarm_id: str, value: Decimal) -> None:
        sunk.append((swarm_id, value))

    rep = ReputationSystem(tracker, bus=bus, sink=sink, observers=[seen], decay_half_life_seconds=100)
    plain = ReputationSystem(tracker)
    await tracker.set_slo("s", SLO)
    assert await rep.record_task("s", 10, True, task_id="T1") == Decimal("1.0000")
    assert await rep.record_task("s", 10, False, task_id="T2") == Decimal("0.4000")  # 0.8 x 1/2
    for _ in range(8):
        clock.now += 1
        await rep.record_task("s", 10, True)
    assert await rep.get_reputation("s") == Decimal("0.7200")  # 9/10, success rate violated
    assert sunk[-1] == ("s", Decimal("0.7200")) and len(sunk) == 10
    evidence_at = clock.now
    clock.now += 60  # every sample has left the window: decay from 0.72 towards 1.0
    # 1 - 0.28 * 2^(-60/100) = 0.81527...
    assert await rep.calculate_reputation("s") == Decimal("0.8153")
    clock.now += 100  # 160 s after the evidence: 1 - 0.28 * 2^-1.6 = 0.90763...
    assert await rep.calculate_reputation("s") == Decimal("0.9076")
    current = await rep.current("s")
    assert current is not None and current.decayed and current.evidence_at == evidence_at
    assert current.evidence_reputation == Decimal("0.7200")
    assert await plain.calculate_reputation("s") == Decimal("1.0000")  # no decay: neutral at once
    history = await rep.history("s")
    assert [h.reputation for h in history][:2] == [Decimal("1.0000"), Decimal("0.4000")]
    assert [str(h.reputation) for h in history[-3:]] == ["0.8153", "0.9076", "1.0000"]
    assert len(history) == 13 and [h.at for h in history] == sorted(h.at for h in history)
    assert [h.reputation for h in await rep.history("s", limit=1)] == [Decimal("1.0000")]
    updates = seen.ops("reputation_updated")
    assert updates[0]["previous"] is None and updates[1] == {
        "swarm_id": "s", "reputation": "0.4000", "previous": "1.0000", "samples": 2,
        "violations": ["success_rate"], "decayed": False}
    assert await rep.prune_history("s", before=evidence_at) == 10 and len(await rep.history("s")) == 3


async def test_reputation_feeds_the_governor(bus: EventBus) -> None:
    clock, seen = Clock(), Seen()
    gov = IFGovernor(bus)
    await gov.register_swarm(SwarmProfile(id="good", capabilities=["docs:markdown"]))
    await gov.register_swarm(SwarmProfile(id="flaky", capabilities=["docs:markdown"]))
    tracker = SLOTracker(bus, clock=clock)
    rep = ReputationSystem(tracker, sink=gov.set_reputation, observers=[seen])
    for sid in ("good", "flaky"):
        await tracker.set_slo(sid, SLO)
    for i in range(10):
        await rep.record_task("good", 20, True)
        await rep.record_task("flaky", 20, i % 2 == 0)
    flaky = await gov.profile("flaky")
    assert flaky is not None and flaky.reputation == Decimal("0.4000")
    best = await gov.find_qualified_swarm(["docs:markdown"])
    assert best is not None and best.id == "good"
    with pytest.raises(TaskNotFoundError):
        await gov.set_reputation("ghost", Decimal(1))
    assert await rep.record_task("ghost", 5, True) == Decimal("1.0000")  # unknown to the governor
    assert seen.ops("reputation_sink_skipped")[0]["swarm_id"] == "ghost"


def test_bad_decay_is_refused() -> None:
    tracker = SLOTracker(None)  # type: ignore[arg-type]
    for bad in (0, -1, float("inf"), True):
        with pytest.raises(ConfigurationError, match="decay_half_life_seconds"):
            ReputationSystem(tracker, decay_half_life_seconds=bad)
