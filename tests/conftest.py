"""Session fixtures: real nats-server and etcd processes on free loopback ports.

If a server cannot start, the fixture fails with the server's log tail; no
test that needs a server is ever skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from infrafabric.bench.cluster import EtcdCluster, LocalCluster, NatsCluster
from infrafabric.bus import EventBus, connect
from infrafabric.bus.embedded import Embedded
from infrafabric.bus.servers import EtcdServer, LocalServer, NatsServer
from infrafabric.bus.url import with_options
from support import persist_helpers

BACKENDS = ("memory", "nats", "etcd")


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A state directory for the session: a command no test gave IF_HOME (or HOME)
    never writes into this checkout's .git/infrafabric (the default inside a git
    repository) or the user's ~/.local/state. Tests of the default clear it."""
    home = tmp_path_factory.mktemp("if-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IF_HOME", str(home))
        try:
            yield
        finally:
            Embedded(home).stop()  # only a server recorded there, if a test left one


@pytest.fixture(autouse=True)
def _persisted_connections_end_with_their_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Heartbeats leave the command line's persisted connection behind (the
    default), each waiting IF_PERSIST (600) idle seconds: the ones a test
    started (their sockets are under the session's temporary directory) end
    with it, so that none holds memory, or a bus, for the tests after it."""
    yield
    for pid in persist_helpers(tmp_path_factory.getbasetemp()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture(scope="module", params=["nats", "etcd"])
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster[Any]]:
    """A 3-node cluster of each engine for the module that asks (the NATS one is
    stopped before the etcd one starts)."""
    made: LocalCluster[Any] = NatsCluster() if request.param == "nats" else EtcdCluster()
    with made:
        asyncio.run(_touch(made.url))  # creates the NATS bucket, whose stream then has a leader
        yield made


async def _touch(url: str) -> None:
    # a cluster just formed may still be electing its JetStream meta leader: creating the
    # bucket then takes more than the default 5 s deadline on a loaded machine
    async with connect(with_options(url, timeout="30")) as bus:
        await bus.revision()


@pytest.fixture
def namespace() -> str:
    """A fresh namespace per test, so tests sharing a server never see each other."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(params=BACKENDS)
def bus_url(request: pytest.FixtureRequest, namespace: str) -> str:
    """The URL of a real bus for each backend, isolated by namespace."""
    backend = request.param
    if backend == "memory":
        return f"memory://?namespace={namespace}"
    server = request.getfixturevalue(f"{backend}_server")
    return f"{server.url}?namespace={namespace}"


@pytest.fixture
async def bus(bus_url: str) -> AsyncIterator[EventBus]:
    async with connect(bus_url) as b:
        yield b


@pytest.fixture(params=["nats", "etcd"])
def engine_url(request: pytest.FixtureRequest, namespace: str) -> str:
    """A real engine's URL (the session servers), for tests that cross processes
    and so cannot run on memory://."""
    server: NatsServer | EtcdServer = request.getfixturevalue(f"{request.param}_server")
    return f"{server.url}?namespace={namespace}"


@pytest.fixture(params=["nats", "etcd"])
def own_engine(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """A server of each engine for this test alone, free to be killed, paused
    and restarted without disturbing the session servers."""
    server: LocalServer = NatsServer() if request.param == "nats" else EtcdServer()
    with server:
        yield server
