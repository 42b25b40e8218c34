"""``IFChassis``: run a swarm's code in the sandbox, under its contract.

Layout on the bus:

* ``chassis/contracts/<swarm>`` — the swarm's :class:`ServiceContract` and
  the digest of its module (what :meth:`IFChassis.load_swarm` accepted)
* ``chassis/modules/<sha256>`` — the module itself when it is small enough
  for the bus (:data:`MAX_SHARED_MODULE_BYTES`), so any process on the bus
  can execute a swarm another process loaded

Each :meth:`IFChassis.execute_task` runs in a fresh store on a worker
thread (wasmtime is synchronous; the event loop keeps serving), under the
contract's :class:`ResourceLimits`. When the contract allows endpoints, the
task gets its own scoped credential, valid for that task only and revoked
when it ends; the guest never sees it, the host checks it on every
``api_call``. Every run is an SLO sample and updates the swarm's reputation
(which the governor, when given as ``reputation_sink``, scores matches by);
every load, run and violation is reported to the observers (the witness).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from infrafabric.bus import EventBus
from infrafabric.bus.bounds import MAX_RECORD_BYTES
from infrafabric.bus.layout import CONTRACTS, MODULES
from infrafabric.chassis.credentials import CredentialManager
from infrafabric.chassis.hostapi import Transport
from infrafabric.chassis.models import ServiceContract, parse_contract
from infrafabric.chassis.reputation import ReputationSystem
from infrafabric.chassis.sandbox import CompiledModule, Runner, Sandbox, TaskResult
from infrafabric.chassis.slo import SLOTracker
from infrafabric.errors import ConfigurationError, ModuleLoadError, SandboxError, TaskNotFoundError

__all__ = ["CONTRACTS", "MAX_SHARED_MODULE_BYTES", "MODULES", "Execution", "IFChassis", "LoadedSwarm"]

#: modules up to this size are shared through the bus (NATS's default message limit is 1 MiB)
MAX_SHARED_MODULE_BYTES = 512 * 1024
Observer = Callable[[str, dict[str, Any]], Awaitable[None]]
ReputationSink = Callable[[str, Decimal], Awaitable[Any]]


@dataclass(frozen=True)
class LoadedSwarm:
    """A swarm whose module and contract the chassis accepted."""

    swarm_id: str
    contract: ServiceContract
    module: CompiledModule
    shared: bool  # whether the module is on the bus for other processes


@dataclass
class Execution:
    """One task run: the guest's result and what it cost."""

    swarm_id: str
    task_id: str
    output: Any
    latency_ms: float
    fuel_used: int | None  # None unless the contract sets max_fuel
    api_calls: int
    logs: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    reputation: Decimal | None = None


class IFChassis:
    """Loads swarms' WebAssembly modules and executes their tasks in the sandbox.

    ``transport`` performs guests' ``api_call``\\ s (none: every call is
    refused); ``reputation_sink`` receives each new reputation (pass
    ``IFGovernor.set_reputation``); ``observers`` are told of every
    operation (pass ``Witness.observer("IF.chassis")``).
    """

    def __init__(self, bus: EventBus, *, sandbox: Runner | None = None,
                 transport: Transport | None = None, reputation_sink: ReputationSink | None = None,
                 observers: Iterable[Observer] = (), clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.observers = list(observers)
        # a Sandbox made here is closed here; one given (a ProcessSandbox, say) belongs to the caller
        self._owned: Sandbox | None = None
        if sandbox is None:
            sandbox = self._owned = Sandbox()
        self.sandbox: Runner = sandbox
        self.transport = transport
        self.credentials = CredentialManager(bus, observers=self.observers, clock=clock)
        self.slo = SLOTracker(bus, observers=self.observers, clock=clock)
        self.reputation = ReputationSystem(self.slo, bus=bus, sink=reputation_sink,
                                           observers=self.observers, clock=clock)
        self._loaded: dict[str, LoadedSwarm] = {}

    async def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    async def __aenter__(self) -> IFChassis:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- loading ---------------------------------------------------------------------------

    async def load_swarm(self, swarm_id: str, module: bytes | str | Path,
                         contract: ServiceContract | dict[str, Any]) -> LoadedSwarm:
        """Validate ``contract``, compile ``module`` (WAT text, wasm bytes or a
        path) and record both on the bus. A module that cannot be loaded
        raises :class:`ModuleLoadError` (or :class:`ForbiddenImportError`),
        witnessed, and changes nothing."""
        if not isinstance(contract, ServiceContract):
            contract = parse_contract(contract)
        if contract.swarm_id != swarm_id:
            raise ConfigurationError(f"contract is for swarm {contract.swarm_id!r}, not {swarm_id!r}")
        try:
            compiled = await asyncio.to_thread(self.sandbox.compile, module, name=swarm_id)
        except ModuleLoadError as exc:
            await self._notify("swarm_load_refused", {"swarm_id": swarm_id, "reason": exc.message,
                                                      "limit": exc.limit, "version": contract.version})
            raise
        if compiled.kind != "task":
            raise ModuleLoadError(f"module for {swarm_id} is a WASI command (_start), not a task module; "
                                  "run it with `ifctl chassis run`", hint="see docs/chassis-abi.md")
        shared = len(compiled._source) <= MAX_SHARED_MODULE_BYTES
        record = _record(contract, compiled, shared)
        if len(record.encode()) > MAX_RECORD_BYTES:  # checked before anything is written
            raise ConfigurationError(f"the contract of {swarm_id} is {len(record.encode()):,} bytes as "
                                     f"stored, more than the {MAX_RECORD_BYTES:,} a record may hold")
        if shared:
            await self.bus.put(f"{MODULES}{compiled.digest}", compiled._source)
        await self.bus.put(f"{CONTRACTS}{swarm_id}", record)
        await self.slo.set_slo(swarm_id, contract.slos, by="chassis")
        loaded = LoadedSwarm(swarm_id, contract, compiled, shared)
        self._loaded[swarm_id] = loaded
        await self._notify("swarm_loaded", {
            "swarm_id": swarm_id, "version": contract.version, "digest": compiled.digest,
            "capabilities": contract.capabilities, "allowed_endpoints": contract.allowed_endpoints,
            "limits": contract.resource_limits.model_dump(mode="json"), "shared": shared})
        return loaded

    async def loaded(self, swarm_id: str) -> LoadedSwarm:
        """The swarm as loaded here, or fetched from the bus (contract and
        module) if another process loaded it."""
        got = self._loaded.get(swarm_id)
        entry = await self.bus.get(f"{CONTRACTS}{swarm_id}")
        if entry is None:
            raise TaskNotFoundError(f"swarm {swarm_id!r} has no module loaded in the chassis",
                                    hint="load it first: ifctl chassis load SWARM MODULE --contract FILE")
        record = json.loads(entry.value)
        contract = parse_contract(record["contract"], source=f"{CONTRACTS}{swarm_id}")
        if got is not None and got.module.digest == record["digest"] and got.contract == contract:
            return got
        source = await self.bus.get(f"{MODULES}{record['digest']}")
        if source is None:
            raise TaskNotFoundError(f"the module of {swarm_id} ({record['digest'][:12]}) is not on the bus "
                                    "(too large to share); load it in this process")
        if hashlib.sha256(source.value).hexdigest() != record["digest"]:
            raise ModuleLoadError(f"the module of {swarm_id} on the bus does not match its digest")
        compiled = await asyncio.to_thread(self.sandbox.compile, source.value, name=swarm_id)
        got = LoadedSwarm(swarm_id, contract, compiled, True)
        self._loaded[swarm_id] = got
        return got

    # -- running -----------------------------------------------------------------------------

    async def execute_task(self, swarm_id: str, task: Any, *, task_id: str | None = None) -> Execution:
        """Run one task of ``swarm_id``: ``task`` (any JSON value; a dict's
        ``"id"`` names the task) goes in, the guest's JSON result comes out.

        A limit or trap ends only this task with its typed
        :class:`SandboxError` (out of memory, fuel, time, rate limit, trap);
        either way the run is an SLO sample and is witnessed."""
        swarm = await self.loaded(swarm_id)
        if task_id is None:
            task_id = str(task.get("id")) if isinstance(task, dict) and task.get("id") else "task"
        limits = swarm.contract.resource_limits
        credential = None
        if swarm.contract.allowed_endpoints:
            ttl = max(1, math.ceil(limits.max_execution_time_seconds) + 5)
            credential = await self.credentials.generate_scoped_credentials(
                swarm_id, task_id, ttl_seconds=ttl, allowed_endpoints=swarm.contract.allowed_endpoints)
        started = time.perf_counter()
        try:
            if credential is not None and credential.api_token is not None:
                async with self.credentials.gate(credential.api_token, swarm_id=swarm_id,
                                                 task_id=task_id) as gate:
                    result = await asyncio.to_thread(self.sandbox.run_task, swarm.module, task, limits=limits,
                                                     gate=gate, transport=self.transport)
            else:  # no endpoint in the contract: no credential, and no transport to reach anything
                result = await asyncio.to_thread(self.sandbox.run_task, swarm.module, task, limits=limits)
        except SandboxError as exc:
            latency = (time.perf_counter() - started) * 1000
            await self._notify("task_limit_exceeded" if exc.limit != "trap" else "task_trapped", {
                "swarm_id": swarm_id, "task_id": task_id, "limit": exc.limit,
                "error": type(exc).__name__, "reason": exc.message})
            await self.reputation.record_task(swarm_id, latency, False, task_id=task_id,
                                              reason=f"{exc.limit}: {exc.message}"[:200])
            raise
        finally:
            if credential is not None:
                await self.credentials.revoke(credential.id, by="chassis")
        latency = (time.perf_counter() - started) * 1000
        reputation = await self.reputation.record_task(swarm_id, latency, True, task_id=task_id)
        await self._notify("task_executed", {"swarm_id": swarm_id, "task_id": task_id,
                                             "latency_ms": round(latency, 3), "fuel_used": result.fuel_used,
                                             "api_calls": result.api_calls})
        return _execution(swarm_id, task_id, result, latency, reputation)

    async def _notify(self, operation: str, params: dict[str, Any]) -> None:
        for observer in self.observers:
            await observer(operation, params)


def _record(contract: ServiceContract, module: CompiledModule, shared: bool) -> str:
    return json.dumps({"contract": contract.model_dump(mode="json"), "digest": module.digest,
                       "kind": module.kind, "shared": shared, "loaded_at": time.time()})


def _execution(swarm_id: str, task_id: str, result: TaskResult, latency: float,
               reputation: Decimal) -> Execution:
    return Execution(swarm_id, task_id, result.output, latency, result.fuel_used, result.api_calls,
                     list(result.logs), list(result.refusals), reputation)
