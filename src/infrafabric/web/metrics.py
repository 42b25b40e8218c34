"""Fleet metrics for ``/metrics``, read from a :class:`FleetView` at scrape time.

These describe the fleet as the bus records it, whichever process did the
work: tasks by status, claims and lease lapses from the board's histories,
spend and budgets, breakers, reputation and SLO status, sandbox traps and the
witness from the chain. What only a calling process can know (claims it lost,
how long its calls took, push latency) is in :mod:`infrafabric.metrics`, in
each process's own default registry; ``/metrics`` appends this server's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from infrafabric.coordinator.models import TaskStatus
from infrafabric.governor import BreakerState
from infrafabric.web.view import WAIT_BUCKETS, FleetView

__all__ = ["FleetCollector", "render"]


class FleetCollector(Collector):
    """A prometheus-client collector over one :class:`FleetView`."""

    def __init__(self, view: FleetView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view
        up = GaugeMetricFamily("infrafabric_bus_up", "1 while the dashboard follows the bus, else 0")
        up.add_metric([], 1.0 if v.connected else 0.0)
        yield up

        tasks = GaugeMetricFamily("infrafabric_tasks", "Tasks on the board by status", labels=["status"])
        by_status = {s: 0 for s in TaskStatus}
        for t in v.tasks.values():
            by_status[t.status] += 1
        for status, n in by_status.items():
            tasks.add_metric([status.value], n)
        yield tasks
        waits = GaugeMetricFamily("infrafabric_tasks_unattended",
                                  "Available tasks no live qualified agent can take (only dead swarms, "
                                  "or none, cover them)")
        waits.add_metric([], len(v.unattended))
        yield waits

        c = v.counts
        won = CounterMetricFamily("infrafabric_claims_won", "Claims recorded on the board, by swarm",
                                  labels=["swarm"])
        for swarm, n in sorted(c.claims_won.items()):
            won.add_metric([swarm], n)
        yield won
        lapses = CounterMetricFamily("infrafabric_lease_lapses",
                                     "Claims whose lease lapsed before completion, by swarm",
                                     labels=["swarm"])
        for swarm, n in sorted(c.lease_lapses.items()):
            lapses.add_metric([swarm], n)
        yield lapses
        wait = HistogramMetricFamily("infrafabric_task_wait_seconds",
                                     "Time from a task becoming available to its claim (board history)")
        cumulative = list(itertools.accumulate(c.wait_buckets))
        wait.add_metric([], [(_le(b), n) for b, n in zip(WAIT_BUCKETS, cumulative, strict=True)],
                        sum_value=c.wait_sum)
        yield wait
        last = GaugeMetricFamily("infrafabric_last_claim_timestamp_seconds",
                                 "When the newest claim on the board was made (epoch seconds)")
        if c.last_claim_at is not None:
            last.add_metric([], c.last_claim_at)
        yield last

        yield from self._swarms()

        traps = CounterMetricFamily("infrafabric_sandbox_traps",
                                    "Sandbox runs ended by a trap or a limit, by swarm and kind",
                                    labels=["swarm", "kind"])
        for (swarm, kind), n in sorted(c.traps.items()):
            traps.add_metric([swarm, kind], n)
        yield traps

        length = GaugeMetricFamily("infrafabric_witness_entries", "Entries in the witness chain")
        length.add_metric([], v.witness_length)
        yield length
        result = v.verify_result
        ok = GaugeMetricFamily("infrafabric_witness_verify_ok",
                               "1 if this server's last full verification of the chain passed, else 0")
        when = GaugeMetricFamily("infrafabric_witness_verify_timestamp_seconds",
                                 "When this server last finished verifying the chain (epoch seconds)")
        if result is not None and result.get("ok") is not None and result.get("at") is not None:
            ok.add_metric([], 1.0 if result["ok"] else 0.0)
            when.add_metric([], float(result["at"]))
        yield ok
        yield when

    def _swarms(self) -> Iterator[Metric]:
        v = self.view
        limit = GaugeMetricFamily("infrafabric_budget_limit_micro_usd", "Budget limit, micro-dollars",
                                  labels=["swarm"])
        spent = GaugeMetricFamily("infrafabric_budget_spent_micro_usd", "Budget spent, micro-dollars",
                                  labels=["swarm"])
        reserved = GaugeMetricFamily("infrafabric_budget_reserved_micro_usd",
                                     "Budget reserved by debits in flight, micro-dollars", labels=["swarm"])
        breaker = GaugeMetricFamily("infrafabric_breaker_state",
                                    "Circuit breaker state: 1 for the current state",
                                    labels=["swarm", "state"])
        reputation = GaugeMetricFamily("infrafabric_swarm_reputation", "Reputation, 0..1", labels=["swarm"])
        slo = GaugeMetricFamily("infrafabric_slo_compliant", "1 if the swarm meets its SLO, else 0",
                                labels=["swarm"])
        live = GaugeMetricFamily("infrafabric_swarm_live",
                                 "1 while an agent of the swarm is connected, waits for work or holds a "
                                 "live claim, else 0", labels=["swarm"])
        for sid in sorted(v.swarms):
            s = v.swarms[sid]
            if s.budget is not None:
                limit.add_metric([sid], s.budget.limit_micros)
                spent.add_metric([sid], s.budget.spent_micros)
                reserved.add_metric([sid], s.budget.reserved_micros)
            state = s.breaker.state if s.breaker is not None else BreakerState.CLOSED
            for each in BreakerState:
                breaker.add_metric([sid, each.value], 1.0 if each is state else 0.0)
            rep = s.reputation_value()
            if rep is not None:
                reputation.add_metric([sid], rep)
            if s.slo_violations is not None:
                slo.add_metric([sid], 0.0 if s.slo_violations else 1.0)
            judged = v.live.get(sid)
            live.add_metric([sid], 1.0 if judged is not None and judged.live else 0.0)
        yield from (limit, spent, reserved, breaker, reputation, slo, live)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def render(registry: CollectorRegistry) -> bytes:
    """The fleet metrics of ``registry`` followed by this process's own
    (prometheus-client's default registry: the library's instruments)."""
    return generate_latest(registry) + generate_latest(REGISTRY)
