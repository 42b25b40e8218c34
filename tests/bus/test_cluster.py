"""The bus on real three-node clusters (:mod:`infrafabric.bench.cluster`): the
basics through a URL naming every node, then faults injected into one node
while a client writes (SIGKILL of the node the client is connected to,
SIGKILL of the leader, SIGSTOP of a follower), checking that

* operations succeed again through the other nodes within a bounded time
  (a hang guard, never a latency assertion; the stall is logged),
* every write acknowledged before, during and after the fault is readable
  afterwards at the revision it was acknowledged with,
* an open watch delivers every acknowledged write exactly once, in order,
* the killed node rejoins from its own data directory and catches up.

Run with ``--log-cli-level=INFO`` to see the measured stalls.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest

from infrafabric.bench.cluster import EtcdCluster, LocalCluster, NatsCluster
from infrafabric.bus import EventBus, EventKind, Health, Watch, WatchEvent, connect
from infrafabric.errors import BusTimeoutError, BusUnavailableError, ServerError

log = logging.getLogger(__name__)

GUARD = 45.0  # fails a phase that hangs; never a latency assertion
OUTAGE = (BusUnavailableError, BusTimeoutError)
TIMEOUT = 2  # the bus timeout of the clients under test (seconds)
PAUSE = 4.0  # how long a follower stays stopped
T = TypeVar("T")


@pytest.fixture
def healthy(cluster: LocalCluster[Any]) -> LocalCluster[Any]:
    """The cluster with every node running and ready (a failed test may have
    left one killed or paused)."""
    return cluster.start()


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


def url_of(cluster: LocalCluster[Any], namespace: str, first: int | None = None) -> str:
    """The cluster's URL with a namespace and the test timeout; ``first``
    moves that node to the front of the host list (etcd tries hosts in order;
    nats-py shuffles them)."""
    nodes = list(range(len(cluster)))
    if first is not None:
        nodes = nodes[first:] + nodes[:first]
    hosts = ",".join(f"{cluster.nodes[i].host}:{cluster.nodes[i].port}" for i in nodes)
    base = cluster.url.split("://", 1)[0] + "://" + hosts
    query = cluster.url.partition("?")[2]
    return f"{base}?{query + '&' if query else ''}namespace={namespace}&timeout={TIMEOUT}"


def connected_node(cluster: LocalCluster[Any], bus: EventBus) -> int:
    """The node the bus is talking to now (from the client's internals: no
    public API says which member a client uses)."""
    b: Any = bus
    port = b._nc.connected_url.port if bus.scheme == "nats" else bus.url.hosts[b._host_index][1]
    return next(i for i, n in enumerate(cluster.nodes) if n.port == port)


async def connect_to_follower(
    cluster: LocalCluster[Any], namespace: str, leader: int
) -> tuple[EventBus, int]:
    """A bus connected (through the full URL) to a node that does not lead."""
    follower = (leader + 1) % len(cluster)
    for _attempt in range(30):
        bus = await connect(url_of(cluster, namespace, first=follower))
        node = connected_node(cluster, bus)
        if node != leader:
            return bus, node
        await bus.close()  # nats-py picked the leader at random: again
    raise AssertionError("never connected to a follower")


async def eventually(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` until it stops failing for want of the bus (the caller's
    guard bounds the wait). Only for reads: a timed-out write has an unknown
    outcome and is read back instead (see :meth:`Writer.write`)."""
    while True:
        try:
            return await call()
        except OUTAGE:
            await asyncio.sleep(0.05)


# -- a writer that records what was acknowledged ------------------------------------


@dataclass
class Writer:
    """Creates ``w/00000``, ``w/00001``... one at a time with unique values,
    retrying through outages, and records every acknowledged write with the
    time it was acknowledged."""

    bus: EventBus
    acked: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] = field(init=False)

    async def write(self, key: str, value: bytes) -> int:
        while True:
            try:
                revision = await self.bus.create(key, value)
            except BusUnavailableError as exc:
                self.errors.append((time.monotonic(), type(exc).__name__))
                await asyncio.sleep(0.05)
                continue
            except BusTimeoutError as exc:  # unknown outcome: read it back
                self.errors.append((time.monotonic(), type(exc).__name__))
                revision = None
            if revision is not None:
                return revision
            try:
                entry = await self.bus.get(key)
            except OUTAGE as exc:
                self.errors.append((time.monotonic(), type(exc).__name__))
                await asyncio.sleep(0.05)
                continue
            if entry is not None:  # an earlier attempt was applied
                assert entry.value == value  # nobody else writes these keys
                return entry.revision

    async def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key, value = f"w/{i:05d}", f"{i}:{uuid.uuid4().hex}".encode()
            self.acked[key] = (value, await self.write(key, value))
            self.times.append(time.monotonic())
            self.progress.set()
            i += 1
            await asyncio.sleep(0.005)

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run())
        self.task.add_done_callback(lambda _: self.progress.set())
        return self.task

    async def until(self, count: int) -> None:
        """Wait until ``count`` writes in all were acknowledged."""
        while len(self.acked) < count:
            if self.task.done():
                self.task.result()  # raises what ended the writer
                raise AssertionError("the writer stopped")
            self.progress.clear()
            await self.progress.wait()

    def stall_after(self, moment: float) -> float:
        """Seconds from ``moment`` to the first write acknowledged after it."""
        return next(t for t in self.times if t > moment) - moment


class Collector:
    """Drains a watch in the background, noting when each event arrived."""

    def __init__(self, watch: Any) -> None:
        self.events: list[WatchEvent] = []
        self.arrived: list[float] = []
        self.new = asyncio.Event()
        self._task = asyncio.create_task(self._run(watch))

    async def _run(self, watch: Any) -> None:
        async for event in watch:
            self.events.append(event)
            self.arrived.append(time.monotonic())
            self.new.set()

    async def until(self, revision: int) -> None:
        while not self.events or self.events[-1].revision < revision:
            if self._task.done():
                self._task.result()
                raise AssertionError("the watch ended")
            self.new.clear()
            await self.new.wait()

    def delivered_at(self, revision: int) -> float:
        return next(t for e, t in zip(self.events, self.arrived, strict=True) if e.revision >= revision)

    async def close(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


async def check_everything_kept(
    bus: EventBus, writer: Writer, collector: Collector, start: int
) -> None:
    """Every acknowledged write is readable at its revision, and the live watch
    delivered each exactly once, in order: what a fresh replay delivers."""
    for key, (value, revision) in writer.acked.items():
        entry = await eventually(functools.partial(bus.get, key))
        assert entry is not None, key
        assert (entry.value, entry.revision) == (value, revision), key
    listed = await eventually(functools.partial(bus.list, "w/"))
    assert {e.key: (e.value, e.revision) for e in listed} == writer.acked

    sentinel = await writer.write("w/zz-sentinel", b"end")
    await collector.until(sentinel)
    events = collector.events
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))
    assert all(e.kind is EventKind.PUT for e in events)
    seen = {e.key: (e.value, e.revision) for e in events if e.key != "w/zz-sentinel"}
    assert seen == writer.acked
    replay: list[WatchEvent] = []
    again = await eventually(functools.partial(open_watch, bus, "w/", start))
    try:
        while not replay or replay[-1].revision < sentinel:
            replay.append(await again.get())
    finally:
        await again.close()
    assert events == replay


async def open_watch(bus: EventBus, prefix: str, start: int | None = None) -> Watch:
    """An established watch (closed again if establishing it failed)."""
    watch = bus.watch(prefix, start_revision=start)
    try:
        return await watch.start()
    except BaseException:
        await watch.close()
        raise


async def node_caught_up(cluster: LocalCluster[Any], index: int, namespace: str, writer: Writer) -> None:
    """The rejoined node ``index`` holds every acknowledged write itself."""
    node = cluster.nodes[index]
    last = max(revision for _, revision in writer.acked.values())
    if isinstance(cluster, NatsCluster):
        # Reads go to the stream leader, so ask the node for its own copy.
        stream = f"KV_{cluster.bucket}"
        while (state := node.stream_state(stream)) is None or state["last_seq"] < last:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    else:
        # A member serves a (linearizable) read from its own store once it has
        # applied everything up to the leader's commit index.
        async with connect(f"{node.url}?namespace={namespace}&timeout={TIMEOUT}") as alone:
            assert await eventually(alone.revision) >= last
            for key, (value, revision) in writer.acked.items():
                entry = await eventually(functools.partial(alone.get, key))
                assert entry is not None and (entry.value, entry.revision) == (value, revision)


# -- basics ---------------------------------------------------------------------------


async def test_cluster_url_names_every_node(healthy: LocalCluster[Any]) -> None:
    hosts = [f"{n.host}:{n.port}" for n in healthy.nodes]
    assert len(set(hosts)) == 3
    scheme = "nats" if isinstance(healthy, NatsCluster) else "etcd"
    expected = f"{scheme}://{','.join(hosts)}" + ("?replicas=3" if scheme == "nats" else "")
    assert healthy.url == expected
    assert len({n.data_dir for n in healthy.nodes}) == 3
    assert 0 <= await healthy.leader() < 3
    if isinstance(healthy, NatsCluster):
        assert healthy.meta_leader() in (0, 1, 2)


async def test_a_client_without_replicas_keeps_the_bucket_replicated(healthy: LocalCluster[Any]) -> None:
    if not isinstance(healthy, NatsCluster):
        return  # etcd has no per-client replication setting
    plain = healthy.url.split("?")[0]  # no ?replicas=3: the client's default is 1
    async with connect(plain) as bus:
        await bus.revision()
    nc = await nats.connect([f"nats://{n.host}:{n.port}" for n in healthy.nodes])
    try:
        info = await nc.jetstream().stream_info(f"KV_{healthy.bucket}")
    finally:
        await nc.close()
    assert info.config.num_replicas == 3 and not info.config.allow_direct  # no stale follower reads


async def test_bus_basics_through_the_cluster(healthy: LocalCluster[Any], namespace: str) -> None:
    async with connect(url_of(healthy, namespace)) as bus, asyncio.timeout(GUARD):
        assert (await bus.health_check()).ok
        async with bus.watch("cas/") as watch, bus.subscribe("chan") as sub:
            rev = await bus.create("cas/k", "a")
            assert rev is not None
            assert await bus.create("cas/k", "b") is None
            new = await bus.update("cas/k", "b", rev)
            assert new is not None and new > rev
            assert await bus.update("cas/k", "c", rev) is None  # stale: loses, no exception
            assert await bus.delete("cas/k", revision=rev) is False
            assert await bus.delete("cas/k", revision=new) is True
            events = [await watch.get() for _ in range(3)]
            assert [(e.kind, e.key, e.value) for e in events] == [
                (EventKind.PUT, "cas/k", b"a"),
                (EventKind.PUT, "cas/k", b"b"),
                (EventKind.DELETE, "cas/k", None),
            ]
            assert [e.revision for e in events[:2]] == [rev, new]
            await bus.publish("chan", "hello")
            assert (await sub.get()).data == b"hello"


async def test_clients_on_different_nodes_see_one_truth(healthy: LocalCluster[Any], namespace: str) -> None:
    """Two clients, each given only one node, race for the same keys: one
    winner per key, and each sees the other's writes and messages."""
    one, two = (f"{healthy.nodes[i].url}?namespace={namespace}&timeout={TIMEOUT}" for i in (0, 2))
    if isinstance(healthy, NatsCluster):
        one, two = (f"{u}&replicas=3" for u in (one, two))
    async with connect(one) as a, connect(two) as b, asyncio.timeout(GUARD):
        async with b.watch("race/") as watch, b.subscribe("chan") as sub:
            wins = await asyncio.gather(
                *(bus.create(f"race/{i}", name) for i in range(20) for bus, name in ((a, "a"), (b, "b")))
            )
            for i in range(20):
                assert sum(w is not None for w in wins[2 * i : 2 * i + 2]) == 1
                entry_a, entry_b = await a.get(f"race/{i}"), await b.get(f"race/{i}")
                assert entry_a == entry_b
            seen = {(await watch.get()).key for _ in range(20)}
            assert seen == {f"race/{i}" for i in range(20)}
            # The subscription's interest reaches node 0 through the cluster's
            # routes a moment after subscribe() returned on node 2: publish
            # until it arrives (at-most-once pub/sub promises no more).
            attempts = 0
            while True:
                attempts += 1
                await a.publish("chan", f"from-a-{attempts}")
                try:
                    got = await sub.get(0.2)
                    break
                except TimeoutError:
                    continue
            assert got.data.startswith(b"from-a-")
            log.info("%s: a message from node 0 reached a subscriber on node 2 at attempt %d",
                     "nats" if isinstance(healthy, NatsCluster) else "etcd", attempts)


# -- faults ---------------------------------------------------------------------------


async def run_fault(
    cluster: LocalCluster[Any], namespace: str, victim_of: str, fault: str = "kill"
) -> None:
    """SIGKILL (or SIGSTOP) a node while a client writes; check nothing
    acknowledged was lost; restart (or resume) the node and check it caught up."""
    engine = "nats" if isinstance(cluster, NatsCluster) else "etcd"
    leader = await cluster.leader()
    bus, node = await connect_to_follower(cluster, namespace, leader)
    victim = node if victim_of == "connected" else leader
    signal_name = "SIGKILL" if fault == "kill" else "SIGSTOP"
    try:
        async with asyncio.timeout(GUARD):
            # Setting up is not under test: a freshly (re)started cluster may
            # still be electing, so the first reads and the watch are retried.
            start = await eventually(bus.revision) + 1
            watch = await eventually(functools.partial(open_watch, bus, "w/", start))
            collector = Collector(watch)
            async with bus.subscribe("chan") as sub:
                writer = Writer(bus)
                task = writer.start()
                await writer.until(30)
                before = len(writer.acked)
                killed_at = time.monotonic()
                if fault == "kill":
                    cluster.kill(victim)
                else:
                    cluster.pause(victim)
                await writer.until(before + 30)
                stall = writer.stall_after(killed_at)
                await eventually(functools.partial(bus.list, "w/"))
                list_ok = time.monotonic() - killed_at
                # the first write acknowledged after the kill, as the watch saw it
                first_after = sorted(r for _, r in writer.acked.values())[before]
                await collector.until(first_after)
                watch_lag = collector.delivered_at(first_after) - killed_at
                writer.stop.set()
                await task
                log.info(
                    "%s: %s of the %s (node %d; client on node %d, leader was %d): "
                    "writes stalled %.2f s, the watch delivered the next write %.2f s and a list "
                    "first succeeded %.2f s after the fault; %d failed attempts (%s); client now "
                    "on node %d, leader %d",
                    engine, signal_name, "leader" if victim == leader else "client's node", victim, node,
                    leader, stall, watch_lag, list_ok, len(writer.errors),
                    ", ".join(sorted({e for _, e in writer.errors})) or "none",
                    connected_node(cluster, bus), await cluster.leader(),
                )
                await check_everything_kept(bus, writer, collector, start)
                await bus.publish("chan", "after")
                assert (await sub.get()).data == b"after"
            await collector.close()
            await watch.close()

            restarted_at = time.monotonic()
            if fault == "kill":
                await asyncio.to_thread(cluster.restart, victim)
            else:
                cluster.resume(victim)
                await asyncio.to_thread(cluster.nodes[victim].wait_ready)
            log.info("%s: node %d rejoined %.2f s after its %s", engine, victim,
                     time.monotonic() - restarted_at, "restart" if fault == "kill" else "SIGCONT")
            writer.acked["w/after-restart"] = (b"x", await writer.write("w/after-restart", b"x"))
            await node_caught_up(cluster, victim, namespace, writer)
    finally:
        await bus.close()


async def test_kill_the_clients_node(healthy: LocalCluster[Any], namespace: str) -> None:
    await run_fault(healthy, namespace, "connected")


async def test_kill_the_leader(healthy: LocalCluster[Any], namespace: str) -> None:
    await run_fault(healthy, namespace, "leader")


async def test_frozen_clients_node_is_left_behind(healthy: LocalCluster[Any], namespace: str) -> None:
    """SIGSTOP the node the client is connected to: its TCP connections stay
    open but nothing answers; the client must notice and move on by itself."""
    await run_fault(healthy, namespace, "connected", fault="pause")


async def test_paused_follower_does_not_stop_writes(healthy: LocalCluster[Any], namespace: str) -> None:
    """SIGSTOP a follower the client is not connected to, past the point where
    its peers notice: a quorum remains, so every write succeeds at once."""
    engine = "nats" if isinstance(healthy, NatsCluster) else "etcd"
    leader = await healthy.leader()
    bus, node = await connect_to_follower(healthy, namespace, leader)
    paused = next(i for i in range(3) if i not in (leader, node))
    try:
        async with asyncio.timeout(GUARD):
            writer = Writer(bus)
            task = writer.start()
            await writer.until(10)
            before = len(writer.acked)
            healthy.pause(paused)
            paused_at = time.monotonic()
            await asyncio.sleep(PAUSE)
            during = len(writer.acked) - before
            assert writer.errors == []
            assert during > 0
            healthy.resume(paused)
            await writer.until(len(writer.acked) + 10)
            writer.stop.set()
            await task
            log.info(
                "%s: node %d stopped (SIGSTOP) %.1f s (leader %d, client on %d): %d writes "
                "acknowledged meanwhile, none failed", engine, paused,
                time.monotonic() - paused_at, leader, node, during,
            )
            assert writer.errors == []
            # The resumed node may call an election when it wakes (its timers
            # fired while it was stopped): reads after that are retried.
            for key, (value, revision) in writer.acked.items():
                entry = await eventually(functools.partial(bus.get, key))
                assert entry is not None and (entry.value, entry.revision) == (value, revision)
            await node_caught_up(healthy, paused, namespace, writer)
    finally:
        await bus.close()


def test_start_failure_reports_every_log(tmp_path: Path) -> None:
    """A cluster that cannot form fails with a clear error, not a hang."""
    made = EtcdCluster(data_dir=tmp_path)
    made.nodes[1].peer_port = made.nodes[0].peer_port  # two members on one peer port
    with pytest.raises(ServerError) as info:
        made.start(timeout=3)
    text = str(info.value)
    assert "did not become ready within 3 s" in text
    assert "--- node 0" in text and "--- node 2" in text
    assert not any(n.running for n in made.nodes)
    made.cleanup()


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=__name__)


async def health_becomes(bus: EventBus, *, ok: bool) -> Health:
    """The first health report that is ``ok`` (checked every 0.5 s, up to GUARD)."""
    for _ in range(int(GUARD / 0.5)):
        health = await bus.health_check()
        if bool(health) is ok:
            return health
        await asyncio.sleep(0.5)
    pytest.fail(f"the health check never became {'healthy' if ok else 'unhealthy'}: {health}")


async def test_health_check_reports_a_lost_quorum(healthy: LocalCluster[Any], namespace: str) -> None:
    """Two of three nodes down: the survivor still answers reads, but no write
    can commit. The health check must say so (it used to report healthy), and
    report healthy again once the nodes are back."""
    leader = await healthy.leader()
    bus = await connect(url_of(healthy, namespace, first=leader))
    try:
        assert await bus.health_check()
        for i in range(3):
            if i != leader:
                healthy.kill(i)
        health = await health_becomes(bus, ok=False)
        assert "lost its quorum" in health.detail or "unreachable" in health.detail, health
        healthy.start()
        health = await health_becomes(bus, ok=True)
        assert "leader" in health.detail or "3 of 3 replicas" in health.detail, health
    finally:
        await bus.close()
