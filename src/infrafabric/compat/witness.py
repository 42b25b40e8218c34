"""The seeds' ``from infrafabric.witness import log_operation, get_operations``.

Both write to / read from the real hash-chained witness on the bus
(:class:`infrafabric.witness.Witness`) of the bound fleet (see
:mod:`infrafabric.compat._runtime`), never a list in this process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from infrafabric.compat._runtime import current, fleet_for, run_sync
from infrafabric.errors import ConfigurationError
from infrafabric.witness import SEVERITIES, WitnessEntry

__all__ = ["get_operations", "get_operations_async", "log_operation", "log_operation_async", "severity_of"]

#: the seeds' severities (``severity='HIGH'``) on the witness's scale
SEED_SEVERITIES = {"LOW": "info", "MEDIUM": "warning", "HIGH": "error", "CRITICAL": "critical"}


def severity_of(severity: str) -> str:
    """A seed severity (``HIGH``) or a witness one (``error``) as the witness's."""
    if not isinstance(severity, str):
        raise ConfigurationError(f"severity must be a string, got {severity!r}")
    mapped = SEED_SEVERITIES.get(severity.upper(), severity.lower())
    if mapped not in SEVERITIES:
        raise ConfigurationError(f"severity must be one of {', '.join(SEVERITIES)} "
                                 f"(or the seeds' {', '.join(SEED_SEVERITIES)}), got {severity!r}")
    return mapped


def _append_args(component: str, operation: str, params: dict[str, Any] | None,
                 severity: str, actor: str | None, trace_id: str | None) -> dict[str, Any]:
    if not isinstance(component, str) or not component:
        raise ConfigurationError(f"component must be a non-empty string, got {component!r}")
    if not isinstance(operation, str) or not operation:
        raise ConfigurationError(f"operation must be a non-empty string, got {operation!r}")
    if params is not None and not isinstance(params, dict):
        raise ConfigurationError(f"params must be a dict, got {type(params).__name__}")
    return dict(component=component, operation=operation, params=params, severity=severity_of(severity),
                actor=actor, trace_id=trace_id)


async def log_operation_async(component: str, operation: str, params: dict[str, Any] | None = None, *,
                              severity: str = "info", actor: str | None = None, trace_id: str | None = None,
                              timestamp: float | None = None, url: str | None = None) -> WitnessEntry:
    """Append one entry to the witness chain; returns it once it is durable.
    ``timestamp`` is accepted and ignored: the witness stamps entries itself."""
    args = _append_args(component, operation, params, severity, actor, trace_id)
    async with fleet_for(url) as fleet:
        return await fleet.witness.append(**args)


def log_operation(component: str, operation: str, params: dict[str, Any] | None = None, *,
                  severity: str = "info", actor: str | None = None, trace_id: str | None = None,
                  timestamp: float | None = None, url: str | None = None
                  ) -> WitnessEntry | asyncio.Task[WitnessEntry]:
    """The seeds' synchronous ``log_operation``.

    With no event loop running: appends and returns the entry. Called from
    async code (as the seeds' ``claim_task`` does) inside a bound session
    (``async with infrafabric.compat.connect(...)``): the entry is queued on
    the session's witness and a task is returned; await it to wait until it is
    durable, else the session's exit does (and raises if it failed). Async
    code outside a session gets a ConfigurationError: use
    :func:`log_operation_async`."""
    args = _append_args(component, operation, params, severity, actor, trace_id)
    session = current()
    if session is not None and url in (None, session.url):
        task = asyncio.ensure_future(session.fleet.witness.append(**args))
        session.pending.add(task)
        return task
    return run_sync("log_operation", lambda: log_operation_async(
        component, operation, params, severity=severity, actor=actor, trace_id=trace_id, url=url),
        twin="infrafabric.compat.log_operation_async")


async def get_operations_async(component: str | None = None, operation: str | None = None, *,
                               url: str | None = None, **filters: Any) -> list[WitnessEntry]:
    """The witness entries matching (``component``, ``operation`` and any of
    :class:`~infrafabric.witness.Filter`'s fields), oldest first."""
    async with fleet_for(url) as fleet:
        session = current()
        if session is not None and session.fleet is fleet:
            await session.settle()  # what this session queued is part of the answer
        return await fleet.witness.get_operations(component, operation, **filters)


def get_operations(component: str | None = None, operation: str | None = None, *,
                   url: str | None = None, **filters: Any) -> list[WitnessEntry]:
    """The seeds' synchronous ``get_operations`` (no event loop may be running
    in this thread; in async code, await :func:`get_operations_async`)."""
    return run_sync("get_operations", lambda: get_operations_async(component, operation, url=url, **filters),
                    twin="infrafabric.compat.get_operations_async")
