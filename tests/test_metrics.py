"""Per-process metrics (infrafabric.metrics) from real claims on memory://, and
the operator config in deploy/prometheus/ (structure, and that every metric
an alert uses exists)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from infrafabric import metrics
from infrafabric.bus import EventBus, connect
from infrafabric.coordinator import ClaimPolicy, IFCoordinator, TaskStatus
from support import Clock

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
GUARD = 10.0  # fails a test that hangs; never a latency assertion
REGISTRY = prometheus_client.REGISTRY

#: the fleet metrics ``ifctl web`` derives from the bus (docs/monitoring.md)
FLEET_METRICS = frozenset({
    "infrafabric_tasks",
    "infrafabric_tasks_unattended",
    "infrafabric_swarm_live",
    "infrafabric_claims_won_total",
    "infrafabric_lease_lapses_total",
    "infrafabric_task_wait_seconds",
    "infrafabric_last_claim_timestamp_seconds",
    "infrafabric_budget_limit_micro_usd",
    "infrafabric_budget_spent_micro_usd",
    "infrafabric_budget_reserved_micro_usd",
    "infrafabric_breaker_state",
    "infrafabric_swarm_reputation",
    "infrafabric_slo_compliant",
    "infrafabric_sandbox_traps_total",
    "infrafabric_witness_entries",
    "infrafabric_witness_verify_ok",
    "infrafabric_witness_verify_timestamp_seconds",
    "infrafabric_bus_up",
})
KNOWN_METRICS = FLEET_METRICS | metrics.METRIC_NAMES
OUTCOMES = metrics.CLAIM_OUTCOMES


# -- reading the default registry ---------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    """Every per-process series a test looks at, so it can assert deltas
    (other tests in this process may have claimed before)."""
    values = {f"claims:{o}": sample("infrafabric_claims_total", outcome=o) for o in OUTCOMES}
    values |= {f"durations:{o}": sample("infrafabric_claim_duration_seconds_count", outcome=o)
               for o in OUTCOMES}
    values["push:count"] = sample("infrafabric_push_latency_seconds_count")
    values["push:sum"] = sample("infrafabric_push_latency_seconds_sum")
    return values


def delta(before: dict[str, float]) -> dict[str, float]:
    after = snapshot()
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


@pytest.fixture
async def bus(namespace: str) -> AsyncIterator[EventBus]:
    async with connect(f"memory://?namespace={namespace}") as b:
        yield b


# -- claims ---------------------------------------------------------------------


async def test_two_swarms_racing_count_one_won_one_lost(namespace: str) -> None:
    url = f"memory://?namespace={namespace}"
    async with connect(url) as b1, connect(url) as b2:
        c1, c2 = IFCoordinator(b1), IFCoordinator(b2)
        await c1.register_swarm("swarm-1")
        await c1.register_swarm("swarm-2")
        await c1.create_task({"id": "task-1", "title": "contended"})
        before = snapshot()
        results = await asyncio.gather(c1.try_claim("swarm-1", "task-1"), c2.try_claim("swarm-2", "task-1"))
        assert sorted(r.won for r in results) == [False, True]
        loser = next(r for r in results if not r.won)
        assert loser.lost and "claimed by" in loser.reason
        assert delta(before) == {"claims:won": 1, "claims:lost": 1, "durations:won": 1, "durations:lost": 1}


async def test_refusals_by_the_checks_count_as_refused(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("painter", ["art:watercolour"])
    await coord.create_tasks([{"id": "code", "title": "c", "capabilities": ["code:python"]},
                              {"id": "first", "title": "f"},
                              {"id": "then", "title": "t", "dependencies": ["first"]}])
    before = snapshot()
    capability = await coord.try_claim("painter", "code")
    assert not capability.won and not capability.lost and "capability coverage" in capability.reason
    blocked = await coord.try_claim("painter", "then")
    assert not blocked.lost and "waiting on dependencies" in blocked.reason
    unknown = await coord.try_claim("nobody", "first")
    assert not unknown.lost and "not registered" in unknown.reason
    assert delta(before) == {"claims:refused": 3, "durations:refused": 3}


async def test_admission_refusal_is_refused_and_a_held_task_is_lost(bus: EventBus) -> None:
    class Broke(ClaimPolicy):
        async def admit(self, swarm: Any, task: Any) -> str | None:
            return "over budget" if swarm.id == "broke" else None

    coord = IFCoordinator(bus, policy=Broke())
    for swarm in ("broke", "rich", "late"):
        await coord.register_swarm(swarm)
    await coord.create_task({"id": "T", "title": "t"})
    before = snapshot()
    assert (await coord.try_claim("broke", "T")).reason == "over budget"
    assert (await coord.try_claim("rich", "T")).won
    assert (await coord.try_claim("late", "T")).lost
    assert (await coord.try_claim("rich", "T")).lost  # another worker of the owning swarm
    await coord.complete_task("rich", "T")
    done = await coord.try_claim("late", "T")
    assert not done.lost and done.reason == "task is completed"
    assert delta(before) == {"claims:won": 1, "claims:lost": 2, "claims:refused": 2,
                             "durations:won": 1, "durations:lost": 2, "durations:refused": 2}


async def test_durations_count_every_attempt_but_no_dry_run(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("a")
    await coord.register_swarm("b")
    await coord.create_tasks([{"id": f"T{i}", "title": "t"} for i in range(3)])
    before = snapshot()
    attempts = 0
    for i in range(3):
        assert (await coord.try_claim("a", f"T{i}", dry_run=True)).won
        for swarm in ("a", "b"):
            await coord.try_claim(swarm, f"T{i}")
            attempts += 1
    changed = delta(before)
    counted = sum(changed.get(f"claims:{o}", 0) for o in OUTCOMES)
    observed = sum(changed.get(f"durations:{o}", 0) for o in OUTCOMES)
    assert counted == observed == attempts == 6
    assert changed["claims:won"] == 3 and changed["claims:lost"] == 3


async def test_a_rival_that_finishes_during_the_race_counts_as_lost(
        bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compare-and-swap lost and the re-read finds the task completed: that
    refusal is a lost race, not a check saying no."""
    coord, rival = IFCoordinator(bus), IFCoordinator(bus)
    await coord.register_swarm("slow")
    await coord.register_swarm("fast")
    await coord.create_task({"id": "T", "title": "t"})
    real_update: Callable[..., Awaitable[int | None]] = bus.update
    raced = False

    async def update(key: str, value: bytes, revision: int) -> int | None:
        nonlocal raced
        if not raced:  # the first write is slow's claim: fast claims and completes first
            raced = True
            assert await rival.claim_task("fast", "T")
            await rival.complete_task("fast", "T")
        return await real_update(key, value, revision)

    monkeypatch.setattr(bus, "update", update)
    before = snapshot()
    outcome = await coord.try_claim("slow", "T")
    assert not outcome.won and outcome.lost and outcome.reason == "task is completed"
    assert any("compare-and-swap" in c and "lost" in c for c in outcome.checks)
    assert delta(before) == {"claims:won": 1, "claims:lost": 1, "durations:won": 1, "durations:lost": 1}


async def test_a_broken_instrument_never_breaks_a_claim(bus: EventBus,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_CLAIMS", {})  # every lookup now raises KeyError
    monkeypatch.setattr(metrics, "PUSH_LATENCY", None)
    coord = IFCoordinator(bus)
    await coord.register_swarm("s")
    async with coord.pushed_tasks("s") as pushes:
        await coord.create_task({"id": "T", "title": "t"})
        assert (await pushes.get(GUARD)).id == "T"
    assert (await coord.try_claim("s", "T")).won


# -- push latency -----------------------------------------------------------------


async def test_a_pushed_task_observes_its_push_latency(bus: EventBus) -> None:
    clock = Clock()
    coord = IFCoordinator(bus, clock=clock)
    await coord.register_swarm("s")
    async with coord.pushed_tasks("s") as pushes:
        before = snapshot()
        await coord.create_task({"id": "T", "title": "t"})
        clock.now += 2.5  # the feed yields the task 2.5 s (coordinator clock) after it became available
        task = await pushes.get(GUARD)
        assert task.id == "T" and task.status is TaskStatus.AVAILABLE
        assert delta(before) == {"push:count": 1, "push:sum": pytest.approx(2.5)}
        # pushed again after a release: measured from the newest `available` transition
        assert await coord.claim_task("s", "T")
        clock.now += 10  # (the feed's waiting mark stays fresh: pushes go to waiting agents only)
        await coord.release_task("s", "T")
        clock.now += 0.25
        before = snapshot()
        assert (await pushes.get(GUARD)).history[-1].reason == "released"
        assert delta(before) == {"push:count": 1, "push:sum": pytest.approx(0.25)}


async def test_unknown_or_negative_push_latency_is_skipped(bus: EventBus) -> None:
    clock = Clock()
    coord = IFCoordinator(bus, clock=clock)
    async with coord.pushed_tasks("s") as pushes:
        before = snapshot()
        await coord.push_task_to_swarm("s", {"id": "bare", "title": "t"})  # no history: unknown
        task = await coord.create_task({"id": "T", "title": "t"})  # "s" is not registered: no push
        clock.now -= 60  # a subscriber whose clock is behind the publisher's
        await coord.push_task_to_swarm("s", task)
        assert [(await pushes.get(GUARD)).id for _ in range(2)] == ["bare", "T"]
        assert delta(before) == {}


# -- exposition -------------------------------------------------------------------


async def test_the_families_are_exposed_in_the_default_registry(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("s")
    async with coord.pushed_tasks("s") as pushes:
        await coord.create_task({"id": "T", "title": "t"})
        await pushes.get(GUARD)
    await coord.try_claim("s", "T")
    families = {f.name: f for f in text_string_to_metric_families(
        prometheus_client.generate_latest().decode())}
    claims = families["infrafabric_claims"]  # the parser drops a counter's _total
    assert claims.type == "counter"
    assert {s.labels["outcome"] for s in claims.samples if s.name == "infrafabric_claims_total"} \
        == set(OUTCOMES)  # pre-bound: every outcome is exposed from the start
    duration = families["infrafabric_claim_duration_seconds"]
    assert duration.type == "histogram"
    buckets = sorted(float(s.labels["le"]) for s in duration.samples
                     if s.name.endswith("_bucket") and s.labels["outcome"] == "won")
    assert buckets[0] == 0.0001 and buckets[-2] == 5.0 and buckets[-1] == float("inf")
    push = families["infrafabric_push_latency_seconds"]
    assert push.type == "histogram"
    assert next(s.value for s in push.samples if s.name.endswith("_count")) >= 1
    exposed = {f.name for f in families.values()} | {s.name for f in families.values() for s in f.samples}
    assert exposed >= metrics.METRIC_NAMES


# -- deploy/prometheus ------------------------------------------------------------


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def metric_names(expr: str) -> set[str]:
    found = set(re.findall(r"\binfrafabric_[a-z0-9_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in found}


def test_the_alert_rules_are_well_formed_and_use_known_metrics() -> None:
    rules = load("alerts.yml")
    assert isinstance(rules, dict) and set(rules) == {"groups"}
    alerts: dict[str, dict[str, Any]] = {}
    for group in rules["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            name = rule["alert"]
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in alerts
            assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["for"]
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert {"summary", "description"} <= set(rule["annotations"])
            assert all(isinstance(v, str) and v.strip() for v in rule["annotations"].values())
            expr = rule["expr"]
            assert isinstance(expr, str) and expr.count("(") == expr.count(")") \
                and expr.count("{") == expr.count("}") and expr.count('"') % 2 == 0, expr
            unknown = metric_names(expr) - KNOWN_METRICS
            assert not unknown, f"{name} uses undocumented metrics {sorted(unknown)}"
            alerts[name] = rule
    exprs = " ".join(r["expr"] for r in alerts.values())
    for needed in ('infrafabric_breaker_state{state="open"} == 1', "infrafabric_budget_limit_micro_usd",
                   "time() - infrafabric_last_claim_timestamp_seconds > 600",
                   'infrafabric_tasks{status="available"} > 0', "infrafabric_witness_verify_ok == 0",
                   "infrafabric_bus_up == 0"):
        assert needed in exprs, needed


def test_the_scrape_config_targets_the_dashboard_and_loads_the_rules() -> None:
    config = load("prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    web = jobs["infrafabric-web"]
    assert web["metrics_path"] == "/metrics" and web["scrape_interval"] == "15s"
    assert [t.rsplit(":", 1)[1] for c in web["static_configs"] for t in c["targets"]] == ["8765"]
    text = (DEPLOY / "prometheus.yml").read_text(encoding="utf-8")
    assert "# - job_name: infrafabric-agents" in text  # the commented per-process example


def test_promtool_accepts_the_config_when_installed() -> None:
    """Nothing to check without Debian's ``promtool`` (it is not installed for this)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        proc = subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_monitoring_doc_names_every_metric() -> None:
    text = (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    missing = sorted(n for n in KNOWN_METRICS if f"`{n}" not in text)
    assert not missing, missing
