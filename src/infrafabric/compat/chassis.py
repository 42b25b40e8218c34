"""The seeds' chassis names with no bus in sight: ``IFChassis()``,
``SLOTracker()``, ``CredentialManager()`` (``infrafabric.chassis.runtime``,
``infrafabric.chassis.auth``).

Each delegates to the real class of :mod:`infrafabric.chassis` on the bound
fleet (see :mod:`infrafabric.compat._runtime`): modules and contracts, SLO
samples, credentials (hashed) and reputation are records on the bus, so
another process, or ``ifctl chassis``, sees them. The seeds call these
synchronously; each method has an ``*_async`` twin for async code.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from infrafabric.chassis import Execution, LoadedSwarm, ScopedCredentials
from infrafabric.chassis import IFChassis as RealChassis
from infrafabric.chassis import ServiceContract as RealContract
from infrafabric.chassis import ServiceLevelObjective as RealObjective
from infrafabric.chassis.sandbox import Sandbox
from infrafabric.compat._runtime import fleet_for, run_sync
from infrafabric.compat.schemas import capability_names, share
from infrafabric.errors import ConfigurationError
from infrafabric.fleet import SEVERITY

__all__ = ["CredentialManager", "IFChassis", "SLOTracker", "ServiceContract", "ServiceLevelObjective"]


@dataclass
class ServiceContract:
    """The seeds' contract dataclass (the real one,
    :class:`infrafabric.chassis.ServiceContract`, is accepted too)."""

    swarm_id: str
    capabilities: list[Any] = field(default_factory=list)
    resource_limits: dict[str, Any] = field(default_factory=dict)
    slos: dict[str, Any] = field(default_factory=dict)
    version: str = "0.1.0"


def _contract(contract: Any) -> RealContract | dict[str, Any]:
    if isinstance(contract, RealContract | dict):
        return contract
    if isinstance(contract, ServiceContract):
        data = dataclasses.asdict(contract)
        data["capabilities"] = capability_names(contract.capabilities, what="contract.capabilities")
        data["slos"] = _objective_fields(contract.slos)
        return data
    raise ConfigurationError(f"contract must be a ServiceContract, got {type(contract).__name__}")


def _objective_fields(slos: dict[str, Any]) -> dict[str, Any]:
    out = dict(slos)
    for name in ("success_rate", "availability"):
        if name in out:
            out[name] = share(out[name], what=f"slos[{name!r}]")
    return out


def ServiceLevelObjective(p99_latency_ms: int = 1000,
                          success_rate: float | Decimal | str = Decimal("0.95"),
                          availability: float | Decimal | str = Decimal("0.99"),
                          window_seconds: int = 3600) -> RealObjective:
    """The seeds' ``ServiceLevelObjective(p99_latency_ms, success_rate,
    availability)``: the real objective, shares taken exactly (a float at its
    shortest decimal form)."""
    return RealObjective(p99_latency_ms=p99_latency_ms, success_rate=share(success_rate, what="success_rate"),
                         availability=share(availability, what="availability"), window_seconds=window_seconds)


class _Bound:
    def __init__(self, url: str | None, sandbox: Sandbox | None) -> None:
        self.url = url
        self.sandbox = sandbox

    @contextlib.asynccontextmanager
    async def _chassis(self) -> AsyncIterator[RealChassis]:
        async with fleet_for(self.url) as fleet:
            if self.sandbox is None:
                yield fleet.chassis
            else:  # the caller's sandbox (compiled-module cache), the fleet's witness and governor
                chassis = RealChassis(fleet.bus, sandbox=self.sandbox,
                                      reputation_sink=fleet.governor.set_reputation,
                                      observers=[fleet.witness.observer("IF.chassis", severities=SEVERITY)],
                                      clock=fleet.clock)
                yield chassis


class IFChassis(_Bound):
    """The seeds' ``IFChassis()``: ``load_swarm(swarm_id, wasm_module,
    contract)`` and ``execute_task(swarm_id, task)`` on the real chassis
    (WebAssembly under limits; the module and contract on the bus, so any
    process may run the swarm's tasks)."""

    def __init__(self, *, url: str | None = None, sandbox: Sandbox | None = None) -> None:
        super().__init__(url, sandbox)

    async def load_swarm_async(self, swarm_id: str, wasm_module: bytes | str | Path,
                               contract: Any) -> LoadedSwarm:
        async with self._chassis() as chassis:
            return await chassis.load_swarm(swarm_id, wasm_module, _contract(contract))

    def load_swarm(self, swarm_id: str, wasm_module: bytes | str | Path, contract: Any) -> LoadedSwarm:
        return run_sync("load_swarm", lambda: self.load_swarm_async(swarm_id, wasm_module, contract),
                        twin="chassis.load_swarm_async")

    async def execute_task_async(self, swarm_id: str, task: Any) -> Execution:
        async with self._chassis() as chassis:
            return await chassis.execute_task(swarm_id, task)

    def execute_task(self, swarm_id: str, task: Any) -> Execution:
        return run_sync("execute_task", lambda: self.execute_task_async(swarm_id, task),
                        twin="chassis.execute_task_async")


class SLOTracker(_Bound):
    """The seeds' ``SLOTracker()``: objectives and samples on the bus
    (:class:`infrafabric.chassis.SLOTracker`). Each sample recorded here also
    recomputes the swarm's SLO-based reputation, which the governor matches by."""

    def __init__(self, *, url: str | None = None) -> None:
        super().__init__(url, None)

    async def set_slo_async(self, swarm_id: str, slo: RealObjective) -> None:
        async with self._chassis() as chassis:
            await chassis.slo.set_slo(swarm_id, slo)

    def set_slo(self, swarm_id: str, slo: RealObjective) -> None:
        run_sync("set_slo", lambda: self.set_slo_async(swarm_id, slo), twin="tracker.set_slo_async")

    async def record_metric_async(self, swarm_id: str, latency_ms: float | None, success: bool) -> None:
        async with self._chassis() as chassis:
            await chassis.reputation.record_task(swarm_id, latency_ms, success)

    def record_metric(self, swarm_id: str, latency_ms: float | None, success: bool) -> None:
        run_sync("record_metric", lambda: self.record_metric_async(swarm_id, latency_ms, success),
                 twin="tracker.record_metric_async")

    async def calculate_slo_compliance_async(self, swarm_id: str) -> dict[str, Any]:
        """The seeds' compliance dict (``success_rate``, ``p99_latency_ms``,
        ``*_compliant``, ``overall_compliant``; rates as exact decimal strings),
        or ``{}`` when the swarm has no objective, as in the seeds."""
        async with self._chassis() as chassis:
            if not await chassis.slo.has_slo(swarm_id):
                return {}
            return (await chassis.slo.calculate_slo_compliance(swarm_id)).as_dict()

    def calculate_slo_compliance(self, swarm_id: str) -> dict[str, Any]:
        return run_sync("calculate_slo_compliance", lambda: self.calculate_slo_compliance_async(swarm_id),
                        twin="tracker.calculate_slo_compliance_async")


class CredentialManager(_Bound):
    """The seeds' ``CredentialManager()``: scoped credentials on the bus, only
    their hash stored (:class:`infrafabric.chassis.CredentialManager`).
    Unlike the seeds' sketch, an empty allow-list allows no endpoint."""

    def __init__(self, *, url: str | None = None) -> None:
        super().__init__(url, None)

    async def generate_scoped_credentials_async(self, swarm_id: str, task_id: str, ttl_seconds: int = 300,
                                                allowed_endpoints: Iterable[str] | None = None
                                                ) -> ScopedCredentials:
        async with self._chassis() as chassis:
            return await chassis.credentials.generate_scoped_credentials(
                swarm_id, task_id, ttl_seconds=ttl_seconds, allowed_endpoints=allowed_endpoints)

    def generate_scoped_credentials(self, swarm_id: str, task_id: str, ttl_seconds: int = 300,
                                    allowed_endpoints: Iterable[str] | None = None) -> ScopedCredentials:
        return run_sync("generate_scoped_credentials", lambda: self.generate_scoped_credentials_async(
            swarm_id, task_id, ttl_seconds, allowed_endpoints),
            twin="manager.generate_scoped_credentials_async")

    async def validate_credentials_async(self, api_token: str, endpoint: str) -> bool:
        async with self._chassis() as chassis:
            return await chassis.credentials.validate_credentials(api_token, endpoint)

    def validate_credentials(self, api_token: str, endpoint: str) -> bool:
        return run_sync("validate_credentials", lambda: self.validate_credentials_async(api_token, endpoint),
                        twin="manager.validate_credentials_async")
