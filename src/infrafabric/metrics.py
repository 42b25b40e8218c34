"""Per-process Prometheus instruments: what only the calling process can know.

InfraFabric's metrics come from two places:

* **Fleet metrics** (``infrafabric_tasks``, ``infrafabric_claims_won_total``,
  budgets, breakers, the witness, ...) describe the shared state. The bus
  holds that state, so ``ifctl web`` derives them from the bus and serves
  them at ``/metrics``: one scrape target sees the whole fleet, whichever
  processes did the work.
* **Per-process instruments** (this module) describe what a process *tried*
  and how long it took: claims lost to a rival or refused by the checks never
  reach the board, and neither does the time a claim call took or how late a
  push arrived. They are recorded in prometheus-client's default registry
  (:data:`prometheus_client.REGISTRY`) by the library itself; any process
  that serves that registry exposes them, e.g. an agent that calls
  ``prometheus_client.start_http_server(9108)`` once at start-up.

The instruments:

``infrafabric_claims_total{outcome}``
    one per :meth:`IFCoordinator.try_claim <infrafabric.coordinator.IFCoordinator.try_claim>`
    call (dry runs excluded); ``outcome`` is ``won`` (the compare-and-swap
    won), ``lost`` (another claimant holds the task or won the race) or
    ``refused`` (a check said no: not available, dependencies, capability
    coverage, policy/admission, swarm not registered).
``infrafabric_claim_duration_seconds{outcome}``
    the wall time of each of those calls.
``infrafabric_push_latency_seconds``
    when a swarm's push feed yields a task: the time since the task last
    became available, on the coordinator's clock (skipped when unknown or
    negative, e.g. under clock skew between processes).

Recording is cheap (the labelled children are bound once, here) and never
raises: a metrics failure must not break a claim.
"""

from __future__ import annotations

import contextlib
from typing import Final, Literal

from prometheus_client import Counter, Histogram

__all__ = [
    "CLAIMS",
    "CLAIM_DURATION",
    "CLAIM_OUTCOMES",
    "METRIC_NAMES",
    "PUSH_LATENCY",
    "ClaimResult",
    "record_claim",
    "record_push_latency",
]

#: how a claim attempt ended, as the ``outcome`` label
ClaimResult = Literal["won", "lost", "refused"]
CLAIM_OUTCOMES: Final[tuple[ClaimResult, ...]] = ("won", "lost", "refused")

#: 0.1 ms (an in-process bus) ... 5 s (a slow engine, a timed-out policy hook)
CLAIM_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: delivery is usually milliseconds; the tail shows a feed that fell behind
PUSH_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                       0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CLAIMS: Final = Counter(
    "infrafabric_claims_total",
    "Claim attempts made by this process (dry runs excluded), by outcome: "
    "won (compare-and-swap won), lost (another claimant holds the task or won the race), "
    "refused (a check said no)",
    ["outcome"],
)
CLAIM_DURATION: Final = Histogram(
    "infrafabric_claim_duration_seconds",
    "Wall time of one claim attempt made by this process, by outcome",
    ["outcome"],
    buckets=CLAIM_BUCKETS,
)
PUSH_LATENCY: Final = Histogram(
    "infrafabric_push_latency_seconds",
    "Time from a task becoming available to its push reaching a feed in this process",
    buckets=PUSH_BUCKETS,
)

#: every metric name this module exposes (as written in PromQL, before histogram suffixes)
METRIC_NAMES: Final = frozenset({
    "infrafabric_claims_total",
    "infrafabric_claim_duration_seconds",
    "infrafabric_push_latency_seconds",
})

# bound once: a claim then costs two dict lookups, not two label resolutions
_CLAIMS: Final = {o: CLAIMS.labels(outcome=o) for o in CLAIM_OUTCOMES}
_DURATIONS: Final = {o: CLAIM_DURATION.labels(outcome=o) for o in CLAIM_OUTCOMES}


def record_claim(outcome: ClaimResult, seconds: float) -> None:
    """Count one claim attempt and its wall time. Never raises."""
    with contextlib.suppress(Exception):  # metrics must never break the claim path
        _CLAIMS[outcome].inc()
        _DURATIONS[outcome].observe(seconds)


def record_push_latency(seconds: float) -> None:
    """Observe a push's latency; negative values (clock skew) are skipped. Never raises."""
    with contextlib.suppress(Exception):  # metrics must never break a feed
        if seconds >= 0:
            PUSH_LATENCY.observe(seconds)
