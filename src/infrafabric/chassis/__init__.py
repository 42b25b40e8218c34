"""The chassis: swarms' code in a WebAssembly sandbox under limits, scoped
credentials, SLO tracking and reputation (see ``docs/chassis-abi.md``)."""

from __future__ import annotations

from infrafabric.chassis.core import Execution, IFChassis, LoadedSwarm
from infrafabric.chassis.credentials import (
    CredentialManager,
    EnvSecretProvider,
    FileSecretProvider,
    ScopedCredentials,
    SecretProvider,
)
from infrafabric.chassis.hostapi import ApiGate, Transport
from infrafabric.chassis.models import (
    ResourceLimits,
    ServiceContract,
    ServiceLevelObjective,
    WasiGrants,
    parse_contract,
)
from infrafabric.chassis.reputation import ReputationSystem
from infrafabric.chassis.sandbox import CommandResult, CompiledModule, Sandbox, TaskResult
from infrafabric.chassis.slo import Compliance, SLOTracker
from infrafabric.chassis.transport import HttpTransport, Route

__all__ = [
    "ApiGate",
    "CommandResult",
    "CompiledModule",
    "Compliance",
    "CredentialManager",
    "EnvSecretProvider",
    "Execution",
    "FileSecretProvider",
    "HttpTransport",
    "IFChassis",
    "LoadedSwarm",
    "ReputationSystem",
    "ResourceLimits",
    "Route",
    "SLOTracker",
    "Sandbox",
    "ScopedCredentials",
    "SecretProvider",
    "ServiceContract",
    "ServiceLevelObjective",
    "TaskResult",
    "Transport",
    "WasiGrants",
    "parse_contract",
]
