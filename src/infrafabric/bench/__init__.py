"""Benchmarks behind ``ifctl bench``: timings are reported, never asserted.

``bench_bus`` compares our :class:`~infrafabric.bus.EventBus` with the raw
engine client on the same server (see :mod:`infrafabric.bench.bus`);
``bench_coordinator`` times the coordinator's claims, push, blockers and
sustained claim rate against the raw engine CAS (see
:mod:`infrafabric.bench.coordinator`); ``bench_witness`` measures witness
appends/s from 1 and 4 writer processes against raw creates, and the time and
memory of verifying a long chain (see :mod:`infrafabric.bench.witness`);
``bench_waste`` replays a seeded workload with random assignment and with the
governor and reports the share of spend wasted (see :mod:`infrafabric.bench.waste`).
"""

from __future__ import annotations

from infrafabric.bench.bus import OPERATIONS, TARGETS, BenchError, bench_bus, default_warmup
from infrafabric.bench.coordinator import bench_coordinator
from infrafabric.bench.stats import QUANTILE_METHOD, nearest_rank, summarize
from infrafabric.bench.waste import bench_waste
from infrafabric.bench.witness import bench_witness

__all__ = [
    "OPERATIONS",
    "QUANTILE_METHOD",
    "TARGETS",
    "BenchError",
    "bench_bus",
    "bench_coordinator",
    "bench_waste",
    "bench_witness",
    "default_warmup",
    "nearest_rank",
    "summarize",
]
