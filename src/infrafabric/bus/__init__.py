"""The event bus: one interface over a revisioned key-value store with
compare-and-swap, prefix list and watch, plus pub/sub.

``connect(url)`` picks the backend by URL scheme:

=================================  ===============================================
``memory://[NAME]``                in-process store (tests, single-process tools)
``nats://host:port[,host:port]``   NATS JetStream key-value bucket + core subjects
``etcd://host:port[,host:port]``   etcd v3: transactions, watches, leases
=================================  ===============================================

Options go in the query string: ``timeout`` (seconds per call, default 5),
``namespace`` (isolates fleets sharing an engine, default ``default``) and
backend options (``bucket``, ``replicas``, ``history`` for NATS).

With no URL, ``IF_BUS_URL`` is used; without it, the embedded local NATS
server of the state directory (``IF_HOME``; by default ``<common git dir>/infrafabric``
inside a git repository, shared by its worktrees, else the per-user
``${XDG_STATE_HOME:-~/.local/state}/infrafabric``), started on demand.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Generator
from types import TracebackType
from typing import Any

from infrafabric.bus.base import (
    Entry,
    EventBus,
    EventKind,
    Health,
    Message,
    Subscription,
    Value,
    Watch,
    WatchEvent,
)
from infrafabric.bus.url import BusURL, parse_url
from infrafabric.errors import ConfigurationError

__all__ = [
    "BusURL",
    "Entry",
    "EventBus",
    "EventKind",
    "Health",
    "Message",
    "Subscription",
    "Value",
    "Watch",
    "WatchEvent",
    "connect",
    "from_url",
    "parse_url",
    "resolve_url",
]

_BACKENDS = {
    "memory": ("infrafabric.bus.memory", "MemoryBus", None),
    "nats": ("infrafabric.bus.nats", "NatsBus", None),
    "etcd": ("infrafabric.bus.etcd", "EtcdBus", "etcd"),
}


def resolve_url(url: str | None = None, *, home: str | os.PathLike[str] | None = None,
                autostart: bool = True) -> str:
    """The bus URL to use: ``url``, else ``IF_BUS_URL``, else the embedded
    local server (started if ``autostart`` and not running)."""
    if url:
        return url
    env = os.environ.get("IF_BUS_URL")
    if env:
        return env
    from infrafabric.bus.embedded import Embedded

    embedded = Embedded(home)
    return embedded.ensure().url if autostart else embedded.require_running().url


def from_url(url: str | BusURL) -> EventBus:
    """An unconnected bus for ``url`` (no I/O)."""
    parsed = url if isinstance(url, BusURL) else parse_url(url)
    module_name, cls_name, extra = _BACKENDS[parsed.scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None or exc.name == module_name:
            raise
        raise ConfigurationError(
            f"{parsed.scheme}:// needs the optional dependency {exc.name!r}",
            hint=f"pip install 'infrafabric[{extra}]'",
        ) from exc
    cls: type[EventBus] = getattr(module, cls_name)
    return cls(parsed)


class _Connecting:
    """Returned by :func:`connect`: ``await`` it for a connected bus, or use it
    as ``async with connect(url) as bus:`` to close the bus on exit."""

    def __init__(self, url: str | None, home: str | os.PathLike[str] | None, autostart: bool) -> None:
        self._url = url
        self._home = home
        self._autostart = autostart
        self._bus: EventBus | None = None

    async def _open(self) -> EventBus:
        bus = from_url(resolve_url(self._url, home=self._home, autostart=self._autostart))
        await bus.connect()
        self._bus = bus
        return bus

    def __await__(self) -> Generator[Any, None, EventBus]:
        return self._open().__await__()

    async def __aenter__(self) -> EventBus:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bus is not None:
            await self._bus.close()


def connect(url: str | None = None, *, home: str | os.PathLike[str] | None = None,
            autostart: bool = True) -> _Connecting:
    """Connect to the bus at ``url`` (see the module docs for the default;
    ``autostart=False``: never start the embedded server, fail if it is not running).

    ``bus = await connect(url)`` or ``async with connect(url) as bus: ...``.
    Raises :class:`~infrafabric.errors.ConfigurationError` for a bad URL and
    :class:`~infrafabric.errors.BusUnavailableError` if the server cannot be reached.
    """
    return _Connecting(url, home, autostart)
