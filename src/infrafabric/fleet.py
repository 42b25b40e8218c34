"""The one assembly: the fleet, wired the same way for every front end.

InfraFabric's guarantees come from its parts working together: the
coordinator hands out work only through the governor (breakers, budgets,
capability policy), every operation lands in the witness's chain, and the
chassis reports reputation back to the governor. :func:`open_fleet` (and
:func:`assemble`, for a bus you already hold) is the one place that wires
them; the CLI, the dashboard, the demo, the agent server and the library's
documented entry point all build through it, so nothing depends on which
front end did an operation::

    import asyncio
    from infrafabric import open_fleet

    async def main() -> None:
        async with open_fleet() as fleet:   # IF_BUS_URL, else this project's embedded server
            await fleet.register_swarm("session-7", ["infra:distributed-systems"])
            claim = await fleet.coordinator.next_task("session-7", wait=30)
            ...

    asyncio.run(main())

What the assembly holds (:class:`Fleet`):

* ``coordinator``: an :class:`~infrafabric.coordinator.IFCoordinator` whose
  claim policy is the governor, observed by the witness;
* ``governor``: the :class:`~infrafabric.governor.IFGovernor`, observed by the witness;
* ``witness``: the :class:`~infrafabric.witness.Witness` every part reports to,
  signing a checkpoint every 1,000 entries when the state directory holds a key;
* ``chassis``: the :class:`~infrafabric.chassis.IFChassis`, built on first use
  (the WebAssembly runtime is heavy to import), its reputation feeding the governor.

One :data:`SEVERITY` map gives every operation the same audit severity
whoever made it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from infrafabric.bus import EventBus, connect
from infrafabric.coordinator import DEFAULT_LEASE_TTL, IFCoordinator
from infrafabric.governor import IFGovernor, SwarmProfile
from infrafabric.witness import Signer, Witness

if TYPE_CHECKING:
    from infrafabric.chassis import IFChassis
    from infrafabric.chassis.sandbox import Runner

__all__ = ["SEVERITY", "WITNESSED_LATER", "Fleet", "assemble", "open_fleet"]

#: the audit severity of each operation, whichever component and front end reports it
SEVERITY: dict[str, str] = {
    # coordinator
    "lease_expired": "warning",
    "task_failed": "warning",
    "blocker_detected": "warning",
    "task_reopened": "notice",
    # governor
    "circuit_breaker_tripped": "error",
    "circuit_breaker_reset": "notice",
    "escalated_to_human": "warning",
    "escalation_webhook_failed": "warning",
    "policy_set": "notice",
    "policy_violation": "warning",
    "budget_set": "notice",
    # chassis
    "credential_refused": "warning",
    "credential_revoked": "notice",
    "slo_violation": "warning",
    "swarm_load_refused": "warning",
    "task_limit_exceeded": "warning",
}

#: operations whose witness entry is written after the operation is acknowledged, not before: a
#: claim's own record (its task's history, tagged with the claim id) holds what the entry says, so a
#: process that dies in between leaves it recoverable (``ifctl doctor --repair``), and the chain's
#: write is off the claim's critical path
WITNESSED_LATER = frozenset({"task_claimed"})
#: seconds a closing fleet waits for the witness entries still queued
SETTLE_WITHIN = 30.0

_DEFAULT = object()


class Fleet:
    """The assembled fleet on one bus (see the module docs). Build it with
    :func:`open_fleet` or :func:`assemble`, not directly."""

    def __init__(self, bus: EventBus, *, witness: Witness, governor: IFGovernor,
                 coordinator: IFCoordinator, clock: Callable[[], float],
                 sandbox: Runner | None = None) -> None:
        self.bus = bus
        self.witness = witness
        self.governor = governor
        self.coordinator = coordinator
        self.clock = clock
        self._sandbox = sandbox
        self._chassis: IFChassis | None = None

    @property
    def chassis(self) -> IFChassis:
        """The sandbox side of the fleet, built on first use."""
        if self._chassis is None:
            from infrafabric.chassis import IFChassis

            self._chassis = IFChassis(self.bus, sandbox=self._sandbox,
                                      reputation_sink=self.governor.set_reputation,
                                      observers=[self.witness.observer("IF.chassis", severities=SEVERITY)],
                                      clock=self.clock)
        return self._chassis

    async def register_swarm(self, swarm_id: str, capabilities: Iterable[str] = ()) -> SwarmProfile:
        """Register (or update) a swarm with these capabilities: its governor
        profile (keeping any cost, reputation and budget set before) and the
        coordinator's record, so it can claim and be pushed work."""
        return await self.governor.ensure_profile(swarm_id, capabilities)

    async def close(self) -> None:
        """Stop the coordinator's watcher and the chassis, and let the witness
        entries still queued be written (the bus stays open)."""
        try:
            await self.coordinator.close()
            if self._chassis is not None:
                await self._chassis.close()
        finally:
            await self.witness.settle(SETTLE_WITHIN)


def assemble(bus: EventBus, *, home: str | os.PathLike[str] | None = None, actor: str | None = None,
             trace_id: str | None = None, signer: Signer | Any | None = _DEFAULT,
             lease_ttl: float = DEFAULT_LEASE_TTL, max_attempts: int = 3,
             clock: Callable[[], float] = time.time, sandbox: Runner | Any | None = None,
             coordinator_factory: Callable[..., IFCoordinator] = IFCoordinator) -> Fleet:
    """The fleet on a connected ``bus`` (no I/O; see :func:`open_fleet`).

    ``home`` is the state directory whose ``witness.key`` (if any) signs
    checkpoints (default: as for the embedded server: ``IF_HOME``, else the
    git repository's shared state, else the per-user default); pass
    ``signer=None`` to sign nothing. ``actor`` and ``trace_id`` stamp the
    witness entries this fleet writes when no swarm or operator is named."""
    if signer is _DEFAULT:
        from infrafabric.bus.embedded import state_dir

        signer = Signer.load(state_dir(home))
    witness = Witness(bus, trace_id=trace_id, actor=actor, signer=signer)
    governor = IFGovernor(bus, observers=[witness.observer("IF.governor", severities=SEVERITY)], clock=clock)
    coordinator = coordinator_factory(bus, policy=governor, lease_ttl=lease_ttl, max_attempts=max_attempts,
                                      observers=[witness.observer("IF.coordinator", severities=SEVERITY,
                                                                  later=WITNESSED_LATER)],
                                      clock=clock)
    return Fleet(bus, witness=witness, governor=governor, coordinator=coordinator, clock=clock,
                 sandbox=sandbox)


class open_fleet:
    """Connect to the bus and assemble the fleet: ``async with open_fleet() as fleet``.

    ``url``: the bus (default ``IF_BUS_URL``, else the embedded server of the
    state directory, started if needed unless ``autostart=False``); ``watch`` (default True) runs the
    coordinator's lease and dependency watcher while the block runs, which a
    long-lived agent or orchestrator wants (lapsed leases come back, completed
    work unblocks dependents at once); one-shot tools pass False. The other
    options are :func:`assemble`'s. On exit the watcher, chassis and bus close.
    """

    def __init__(self, url: str | None = None, *, home: str | os.PathLike[str] | None = None,
                 watch: bool = True, actor: str | None = None, trace_id: str | None = None,
                 signer: Signer | Any | None = _DEFAULT, lease_ttl: float = DEFAULT_LEASE_TTL,
                 max_attempts: int = 3, clock: Callable[[], float] = time.time,
                 autostart: bool = True) -> None:
        self._url = url
        self._autostart = autostart
        self._home = home
        self._watch = watch
        self._options: dict[str, Any] = dict(actor=actor, trace_id=trace_id, signer=signer,
                                             lease_ttl=lease_ttl, max_attempts=max_attempts, clock=clock)
        self._bus: EventBus | None = None
        self._fleet: Fleet | None = None

    async def __aenter__(self) -> Fleet:
        bus = await connect(self._url, home=self._home, autostart=self._autostart)
        self._bus = bus
        try:
            fleet = assemble(bus, home=self._home, **self._options)
            if self._watch:
                await fleet.coordinator.start()
        except BaseException:
            await bus.close()
            raise
        self._fleet = fleet
        return fleet

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._fleet is not None:
                await self._fleet.close()
        finally:
            if self._bus is not None:
                await self._bus.close()
