"""Which fleet a seed-style call talks to, and how a synchronous seed call runs.

The seeds call module-level functions and build objects with no bus in sight
(``log_operation(...)``, ``IFGovernor(coordinator=None, policy=...)``,
``CredentialManager()``). Here every such call is bound to an explicit bus,
never to state kept in this process:

* inside ``async with infrafabric.compat.connect(url) as session:``, calls made
  on that event loop use the session's fleet (one connection);
* otherwise the bus is ``IF_BUS_URL`` (else the project's embedded server, as
  for the CLI), and each call opens its own connection and closes it.

Everything these calls read or change lives on the bus, so two processes (or a
process and ``ifctl``) see the same thing.

A synchronous seed call (``governor.find_qualified_swarm(...)``) runs its
coroutine with :func:`asyncio.run` when no event loop is running in this
thread. Inside a running loop it refuses with a
:class:`~infrafabric.errors.ConfigurationError` naming the ``*_async`` twin to
``await``: it must not block the loop it would need.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from infrafabric.errors import ConfigurationError
from infrafabric.fleet import Fleet, open_fleet

__all__ = ["Session", "connect", "current", "fleet_for", "run_sync"]

T = TypeVar("T")


class Session:
    """A fleet bound for seed-style calls on one event loop (see :func:`connect`)."""

    def __init__(self, url: str | None, fleet: Fleet, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.fleet = fleet
        self.loop = loop
        #: witness entries queued by synchronous ``log_operation`` calls, awaited on close
        self.pending: set[asyncio.Task[Any]] = set()

    async def settle(self) -> None:
        """Wait for the entries queued by synchronous ``log_operation`` calls;
        the first that failed is raised."""
        while self.pending:
            batch = list(self.pending)
            self.pending.difference_update(batch)
            for outcome in await asyncio.gather(*batch, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome


_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("infrafabric_compat", default=None)


def current() -> Session | None:
    """The session bound on the running event loop, if any."""
    session = _current.get()
    if session is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return session if session.loop is loop else None


class connect:
    """``async with infrafabric.compat.connect(url) as session:`` binds the seeds'
    module-level functions and bus-less objects to the fleet on ``url``
    (default ``IF_BUS_URL``, else the embedded server) for the calls made in
    the block, on this event loop. On exit, queued witness entries are written
    and the connection closes."""

    def __init__(self, url: str | None = None, *, home: str | None = None) -> None:
        self._url = url
        self._opener = open_fleet(url, home=home, watch=False)
        self._session: Session | None = None
        self._token: contextvars.Token[Session | None] | None = None

    async def __aenter__(self) -> Session:
        fleet = await self._opener.__aenter__()
        self._session = Session(self._url, fleet, asyncio.get_running_loop())
        self._token = _current.set(self._session)
        return self._session

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._session is not None:
                await self._session.settle()
        finally:
            if self._token is not None:
                _current.reset(self._token)
            await self._opener.__aexit__(exc_type, exc, tb)


@contextlib.asynccontextmanager
async def fleet_for(url: str | None = None) -> AsyncIterator[Fleet]:
    """The fleet for one call: the bound session's (when ``url`` is None or
    its URL), else a connection opened for this call and closed after it."""
    session = current()
    if session is not None and url in (None, session.url):
        yield session.fleet
        return
    async with open_fleet(url, watch=False) as fleet:
        yield fleet


def run_sync(name: str, make: Callable[[], Coroutine[Any, Any, T]], *, twin: str) -> T:
    """Run the coroutine ``make()`` builds, for the synchronous seed call
    ``name``, when no event loop runs in this thread; else refuse, naming the
    ``twin`` to await."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    raise ConfigurationError(
        f"{name}() is synchronous, as in the seeds, and an event loop is running in this thread: "
        "it would block the loop it needs",
        hint=f"in async code, use `await {twin}(...)` (same arguments)")
