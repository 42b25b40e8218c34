"""The chassis's contracts: what a swarm's code may use, and what it promises.

A :class:`ServiceContract` is validated before any module is loaded; every
field is checked strictly (unknown keys, wrong types and out-of-range values
are refused with the field named), because a contract is what stands between
unreviewed agent code and the host.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infrafabric.coordinator.models import CAPABILITY_PATTERN, TASK_ID_PATTERN
from infrafabric.errors import ConfigurationError

__all__ = [
    "CompileLimits",
    "DirectoryGrant",
    "ResourceLimits",
    "ServiceContract",
    "ServiceLevelObjective",
    "WasiGrants",
    "parse_contract",
]

Capability = Annotated[str, Field(pattern=f"^{CAPABILITY_PATTERN}$")]
SwarmId = Annotated[str, Field(pattern=f"^{TASK_ID_PATTERN}$")]
#: an API endpoint a credential may call: ``name`` or ``name/sub/path`` (no scheme, no secrets)
ENDPOINT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}"
#: an allow-list entry: an endpoint, or ``name/*`` for everything below ``name/``
ALLOWED_ENDPOINT_PATTERN = rf"{ENDPOINT_PATTERN}(/\*)?"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceLimits(_Strict):
    """Per-task limits, enforced on the wasmtime store and engine (never with
    ``setrlimit`` on the host process).

    * ``max_memory_mb`` — linear memory cap (store limit); a ``memory.grow``
      past it fails and a module that starts above it will not instantiate.
    * ``max_execution_time_seconds`` — wall clock, as an epoch deadline. A
      task runs on one thread, so this bounds its CPU time too.
    * ``max_cpu_percent`` — the share of one core the task may use over time
      (the seeds' ``max_cpu_percent``). Below 100 the run is paced: every
      :data:`~infrafabric.chassis.sandbox.PACE_SLICE_S` of guest execution the
      host compares the thread's CPU time with the wall time since the start
      and sleeps the guest until the share is met again. A run shorter than
      one slice is never slowed.
    * ``max_fuel`` — an exact instruction budget as wasmtime fuel (about one
      unit per wasm instruction), the same on every machine; ``None`` (the
      default) counts nothing. Counting costs: fuel instruments every basic
      block, measured at 1.2-1.4x on call-heavy code and on CPython
      (``ifctl bench chassis``), so it is opt-in.
    * ``max_api_calls_per_second`` — token bucket on the ``api_call`` host function.
    * ``max_log_bytes`` — total bytes one task may write through ``log``.
    """

    max_memory_mb: int = Field(default=256, ge=1, le=4096)
    max_fuel: int | None = Field(default=None, ge=1_000)
    max_execution_time_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_cpu_percent: int = Field(default=100, ge=1, le=100)
    max_api_calls_per_second: int = Field(default=10, ge=0, le=10_000)
    max_log_bytes: int = Field(default=64 * 1024, ge=0, le=16 * 1024 * 1024)

    @property
    def max_memory_bytes(self) -> int:
        return self.max_memory_mb * 1024 * 1024


class CompileLimits(_Strict):
    """Bounds on compiling one module the host does not trust.

    * ``memory_mb`` — address space of the compiler process, interpreter included;
    * ``timeout_seconds`` — wall clock for the compile;
    * ``inline_bytes`` — modules this small compile in-process instead.
    """

    memory_mb: int = Field(default=512, ge=64, le=65_536)
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    inline_bytes: int = Field(default=64 * 1024, ge=0, le=64 * 1024 * 1024)


class ServiceLevelObjective(_Strict):
    """What a swarm promises (the seeds' P0.3.4), judged over ``window_seconds``.

    * ``p99_latency_ms`` — 99th percentile of task latency must not exceed it;
    * ``success_rate`` — successful tasks / all tasks, at least this;
    * ``availability`` — samples in which the swarm could run at all (not
      refused by a load failure or an open breaker) / all samples, at least this.
    """

    p99_latency_ms: int = Field(default=1000, ge=1)
    success_rate: Decimal = Field(default=Decimal("0.95"), ge=0, le=1)
    availability: Decimal = Field(default=Decimal("0.99"), ge=0, le=1)
    window_seconds: int = Field(default=3600, ge=1)


class DirectoryGrant(_Strict):
    """A host directory preopened for the guest (WASI)."""

    host: str = Field(min_length=1)
    guest: str = Field(min_length=1)
    read_only: bool = True


class WasiGrants(_Strict):
    """What a WASI module may touch. The default grants nothing: no directory,
    no environment variable, no socket (wasmtime-py's WASI offers none)."""

    directories: list[DirectoryGrant] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        return env


class ServiceContract(_Strict):
    """A swarm's contract with the chassis (the seeds' ``ServiceContract``)."""

    swarm_id: SwarmId
    capabilities: list[Capability] = Field(default_factory=list)
    resource_limits: ResourceLimits = Field(default_factory=ResourceLimits)
    slos: ServiceLevelObjective = Field(default_factory=ServiceLevelObjective)
    version: str = Field(default="0.1.0", pattern=r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$")
    #: endpoints the module may reach through ``api_call`` (further narrowed per task by its credential)
    allowed_endpoints: list[Annotated[str, Field(pattern=f"^{ALLOWED_ENDPOINT_PATTERN}$")]] = Field(
        default_factory=list)
    wasi: WasiGrants = Field(default_factory=WasiGrants)


def parse_contract(data: Any, *, source: str = "contract") -> ServiceContract:
    """Validate ``data`` as a contract, or raise :class:`ConfigurationError`
    naming every bad field (``source: field.path: reason``)."""
    try:
        return ServiceContract.model_validate(data)
    except ValidationError as exc:
        problems = [f"{source}: {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigurationError("invalid service contract:\n  " + "\n  ".join(problems)) from exc
