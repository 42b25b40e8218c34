"""etcd-specific behaviour of the bus, against real etcd processes.

Crash tests start their own :class:`EtcdServer` so the session server that the
conformance suite uses is never killed or compacted.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import pytest

from infrafabric.bus import Entry, EventBus, EventKind, WatchEvent, connect, from_url
from infrafabric.bus.etcd import EtcdBus, _RangeGuess
from infrafabric.bus.servers import EtcdServer, free_port
from infrafabric.errors import (
    BusError,
    BusTimeoutError,
    BusUnavailableError,
    CompactedError,
)
from support import assert_scan_streams

pytestmark = pytest.mark.engine

T = TypeVar("T")
OUTAGE = (BusUnavailableError, BusTimeoutError)
N_WRITES = 60
KILL_AFTER = 20


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Retry ``call`` while the bus is unreachable (the caller bounds the time)."""
    while True:
        try:
            return await call()
        except OUTAGE:
            await asyncio.sleep(0.05)


@pytest.fixture
async def raw(etcd_server: EtcdServer) -> AsyncIterator[Any]:
    """A plain aetcd client on the session server, to look behind the bus."""
    client = aetcd.Client(etcd_server.host, etcd_server.port, timeout=5)
    yield client
    await client.close()


# -- connecting -------------------------------------------------------------


async def test_connect_to_nothing_raises_unavailable() -> None:
    port = free_port()
    tasks_before = asyncio.all_tasks()
    with pytest.raises(BusUnavailableError) as info:
        async with asyncio.timeout(30):
            await connect(f"etcd://127.0.0.1:{port}")
    err = info.value
    assert f"etcd://127.0.0.1:{port}" in err.message
    assert err.hint is not None
    assert f"is etcd running at 127.0.0.1:{port}?" in err.hint
    assert "IF_BUS_URL" in err.hint
    assert err.exit_code == 3
    assert isinstance(err.__cause__, aetcd.ClientError)
    assert asyncio.all_tasks() == tasks_before


async def test_connect_fails_over_to_the_next_host(etcd_server: EtcdServer, namespace: str) -> None:
    dead = free_port()
    url = f"etcd://127.0.0.1:{dead},{etcd_server.host}:{etcd_server.port}?namespace={namespace}"
    async with connect(url) as bus:
        revision = await bus.put("k", "v")
        entry = await bus.get("k")
        assert entry is not None
        assert entry.revision == revision
        health = await bus.health_check()
        assert health.ok
        assert f"via {etcd_server.host}:{etcd_server.port}" in health.detail


async def test_a_lost_host_fails_over_to_the_next_at_run_time(namespace: str) -> None:
    # Two independent servers stand in for two members of one cluster: the
    # point is that the bus moves on by itself, not what the second one holds.
    with EtcdServer() as first, EtcdServer() as second:
        url = f"etcd://{first.host}:{first.port},{second.host}:{second.port}?namespace={namespace}"
        async with connect(url) as bus:
            assert f"via {first.host}:{first.port}" in (await bus.health_check()).detail
            first.kill()
            async with asyncio.timeout(60):
                with pytest.raises(OUTAGE):
                    await bus.get("k")
                assert await retrying(functools.partial(bus.put, "k", "on-second")) > 0
            health = await bus.health_check()
            assert health.ok
            assert f"via {second.host}:{second.port}" in health.detail


async def test_close_leaves_none_of_our_tasks_behind(etcd_server: EtcdServer, namespace: str) -> None:
    before = asyncio.all_tasks()
    bus = await connect(f"{etcd_server.url}?namespace={namespace}")
    async with bus.watch("x/") as watch, bus.subscribe("s") as sub:
        await bus.put("x/1", "1")
        await bus.publish("s", "m")
        await watch.get(10)
        await sub.get(10)
        assert len(asyncio.all_tasks()) > len(before)
    await bus.watch("y/").start()
    await bus.close()
    left = asyncio.all_tasks() - before
    # gRPC finishes the status of the cancelled watch stream on its own a moment
    # after the channel closed; that task is gRPC's, not ours.
    ours = [t for t in left if "_AioCall" not in getattr(t.get_coro(), "__qualname__", "")]
    assert ours == []


async def test_health_describes_the_server(etcd_server: EtcdServer, namespace: str) -> None:
    async with connect(f"{etcd_server.url}?namespace={namespace}") as bus:
        revision = await bus.put("k", "v")
        health = await bus.health_check()
    assert health.ok
    assert health.backend == "etcd"
    assert health.detail.startswith("etcd 3.")
    at = int(health.detail.split("at revision ")[1].split(",")[0])
    assert at >= revision
    assert "leader " in health.detail


# -- layout -----------------------------------------------------------------


async def test_keys_live_under_infrafabric_namespace(
    etcd_server: EtcdServer, namespace: str, raw: Any
) -> None:
    async with connect(f"{etcd_server.url}?namespace={namespace}") as bus:
        revision = await bus.put("tasks/P0.1", "x")
    kv = await raw.get(f"/infrafabric/{namespace}/tasks/P0.1".encode())
    assert kv is not None
    assert kv.value == b"x"
    assert kv.mod_revision == revision


# -- pub/sub leases ------------------------------------------------------------


async def test_pubsub_messages_share_one_lease_expire_and_are_not_listed(
    etcd_server: EtcdServer, namespace: str, raw: Any
) -> None:
    prefix = f"/infrafabric/_pubsub/{namespace}/chan/#".encode()
    async with connect(f"{etcd_server.url}?namespace={namespace}&pubsub_ttl=2") as bus:
        await bus.put("kept", "1")
        async with bus.subscribe("chan") as sub:
            for i in range(3):
                await bus.publish("chan", f"m{i}")
            assert [(await sub.get(10)).data for _ in range(3)] == [b"m0", b"m1", b"m2"]

        stored = await raw.get_prefix(prefix)
        assert len(stored) == 3
        leases = {kv.lease for kv in stored}
        assert len(leases) == 1
        assert 0 not in leases
        assert [e.key for e in await bus.list()] == ["kept"]

        # Expiry deletes the message keys: wait for those deletes, event-driven.
        expired: set[bytes] = set()
        watch = await raw.watch_prefix(prefix, start_revision=stored.header.revision + 1)
        try:
            async with asyncio.timeout(30):
                async for event in watch:
                    if event.kind == aetcd.EventKind.DELETE:
                        expired.add(event.kv.key)
                    if len(expired) == 3:
                        break
        finally:
            await watch.cancel()
        assert not await raw.get_prefix(prefix)
        assert [e.key for e in await bus.list()] == ["kept"]


async def test_subscription_is_exact_not_a_prefix(etcd_server: EtcdServer, namespace: str) -> None:
    async with (
        connect(f"{etcd_server.url}?namespace={namespace}") as bus,
        bus.subscribe("a") as parent,
        bus.subscribe("a/b") as child,
    ):
        await bus.publish("a/b", "for child")
        await bus.publish("ab", "for nobody")
        await bus.publish("a", "for parent")
        assert (await parent.get(10)).data == b"for parent"
        assert (await child.get(10)).data == b"for child"


async def test_a_subjects_next_subscription_takes_over_the_last_ones_watch(
        etcd_server: EtcdServer, namespace: str) -> None:
    """A closed subscription's watch lingers and the subject's next one takes
    it over (no watch created: an agent waits for pushes again and again).
    It hears nothing published while nobody listened, and everything after."""
    async with connect(f"{etcd_server.url}?namespace={namespace}") as bus:
        assert isinstance(bus, EtcdBus)
        async with bus.subscribe("s") as first:
            await bus.publish("s", "one")
            assert (await first.get(10)).data == b"one"
            follower = first._follower  # type: ignore[attr-defined]
        assert list(bus._lingering) == [bus._pubsub_prefix(bus._ns("s"))]
        await bus.publish("s", "while nobody listened")
        created = 0
        watch_prefix = bus._live_client().watch_prefix

        async def counted(*args: Any, **kw: Any) -> Any:
            nonlocal created
            created += 1
            return await watch_prefix(*args, **kw)

        bus._client.watch_prefix = counted  # type: ignore[union-attr]
        async with bus.subscribe("s") as second:
            assert second._follower is follower and bus._lingering == {}  # type: ignore[attr-defined]
            await bus.publish("s", "two")
            assert (await second.get(10)).data == b"two"
            with pytest.raises(TimeoutError):
                await second.get(0.3)
            async with bus.subscribe("s") as third:  # a second one open at once: a watch of its own
                await bus.publish("s", "three")
                assert (await third.get(10)).data == b"three" and (await second.get(10)).data == b"three"
        assert created == 1 and len(bus._lingering) == 1  # (the other one closed at once)
    assert bus._lingering == {}  # closing the bus closes what lingers


# -- watches --------------------------------------------------------------------


async def test_watch_from_a_compacted_revision_raises_compacted() -> None:
    with EtcdServer() as server:
        async with connect(server.url) as bus:
            first = await bus.put("a", "1")
            await bus.put("a", "2")
            last = await bus.put("a", "3")
            raw = aetcd.Client(server.host, server.port, timeout=5)
            try:
                await raw.compact(last)
            finally:
                await raw.close()
            with pytest.raises(CompactedError):
                async with asyncio.timeout(30):
                    await bus.watch("", start_revision=first).start()
            async with bus.watch("", start_revision=last) as watch:
                event = await watch.get(10)
            assert (event.key, event.value, event.revision) == ("a", b"3", last)


# -- crash and restart -----------------------------------------------------------


async def test_kill_and_restart_loses_nothing_and_the_bus_recovers(namespace: str) -> None:
    keys = [f"w/{i:04d}" for i in range(N_WRITES)]
    acked: dict[str, int] = {}
    enough = asyncio.Event()

    with EtcdServer() as server:
        async with connect(f"{server.url}?namespace={namespace}&timeout=2") as bus:

            async def write_one(key: str) -> int:
                try:
                    revision = await bus.create(key, key)
                except BusTimeoutError:
                    revision = None  # the outcome is unknown: read it back below
                if revision is None:
                    entry = await bus.get(key)
                    if entry is None:
                        raise BusUnavailableError("not written yet, try again")
                    revision = entry.revision
                return revision

            async def writer() -> None:
                for key in keys:
                    acked[key] = await retrying(functools.partial(write_one, key))
                    if len(acked) == KILL_AFTER:
                        enough.set()
                    await asyncio.sleep(0.01)

            start = await bus.revision() + 1
            async with bus.watch("w/") as watch, bus.subscribe("chan") as sub:
                await bus.publish("chan", "before")
                assert (await sub.get(10)).data == b"before"

                async with asyncio.timeout(120):
                    writing = asyncio.create_task(writer())
                    await enough.wait()
                    server.kill()

                    # (b) the outage is reported, not hung on
                    with pytest.raises(OUTAGE):
                        await bus.get(keys[0])
                    assert not (await bus.health_check()).ok

                    await asyncio.to_thread(server.start)
                    await writing

                    # the same bus object works again by itself
                    assert (await bus.health_check()).ok
                    for i in range(3):
                        await bus.publish("chan", f"after-{i}")
                    sentinel = await bus.put("w/zz-sentinel", "end")

                    events: list[WatchEvent] = []
                    while not events or events[-1].revision < sentinel:
                        events.append(await watch.get())
                    messages = [(await sub.get()).data for _ in range(3)]

                    async with bus.watch("w/", start_revision=start) as replay:
                        history: list[WatchEvent] = []
                        while not history or history[-1].revision < sentinel:
                            history.append(await replay.get())

            # every acknowledged write survived the crash
            assert len(acked) == N_WRITES
            for key, revision in acked.items():
                entry = await bus.get(key)
                assert entry is not None
                assert entry.revision == revision
            assert [e.key for e in await bus.list("w/")] == [*keys, "w/zz-sentinel"]

    # the live watch saw every event exactly once, in order, across the restart
    assert events == history
    assert [e.key for e in events] == [*keys, "w/zz-sentinel"]
    assert all(e.kind is EventKind.PUT for e in events)
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))
    assert {e.key: e.revision for e in events[:-1]} == acked
    # and the subscription resumed
    assert messages == [b"after-0", b"after-1", b"after-2"]


# -- error translation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "write", "expected"),
    [
        (aetcd.ConnectionFailedError("failed to connect to all addresses"), True,
         BusUnavailableError),
        (aetcd.ConnectionFailedError("failed to connect to all addresses"), False,
         BusUnavailableError),
        # the connection broke mid-call: a write may have been applied
        (aetcd.ConnectionFailedError("Stream removed (Socket closed)"), True, BusTimeoutError),
        (aetcd.ConnectionFailedError("Stream removed (Socket closed)"), False,
         BusUnavailableError),
        (aetcd.ConnectionTimeoutError("Deadline Exceeded"), False, BusTimeoutError),
        (aetcd.WatchTimeoutError(), False, BusTimeoutError),
        (aetcd.RevisionCompactedError(7), False, CompactedError),
        (aetcd.InvalidArgumentError("etcdserver: key is not provided"), True, BusError),
    ],
)
def test_client_errors_are_translated_once_and_chained(
    error: BaseException, write: bool, expected: type[BusError]
) -> None:
    bus = from_url("etcd://127.0.0.1:2379")
    assert isinstance(bus, EtcdBus)
    with pytest.raises(BusError) as info, bus._translate("put", "k", write=write):
        raise error
    assert type(info.value) is expected
    assert info.value.__cause__ is error


# -- scan ---------------------------------------------------------------------------


def stopped(pid: int) -> bool:
    """True once every thread of the SIGSTOPped process ``pid`` has stopped (the
    signal takes effect asynchronously, later still on a busy machine)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(s in ("T", "t") for s in states)


async def put_raw(raw: Any, items: list[tuple[str, bytes]]) -> None:
    """Write many keys fast: transactions of 128 puts (etcd's default limit), a few at once."""
    sem = asyncio.Semaphore(8)

    async def chunk(part: list[tuple[str, bytes]]) -> None:
        async with sem:
            await raw.transaction(
                compare=[], success=[raw.transactions.put(k.encode(), v) for k, v in part], failure=[]
            )

    await asyncio.gather(*(chunk(items[i : i + 128]) for i in range(0, len(items), 128)))


async def drain(scan: AsyncIterator[Any]) -> None:
    async for _entry in scan:
        pass


def count_ranges(bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every Range request the bus sends."""
    assert isinstance(bus, EtcdBus)
    stub = bus._client.kvstub
    sent: list[Any] = []
    original = stub.Range

    def recording(request: Any, **kwargs: Any) -> Any:
        sent.append(request)
        return original(request, **kwargs)

    monkeypatch.setattr(stub, "Range", recording)
    return sent


async def test_scan_20k_entries_once_each_in_key_order(
    etcd_server: EtcdServer, namespace: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys of several shapes, so the range-end guesses meet dense runs, gaps
    # and keys of different lengths; written in random order.
    keys = (
        [f"s/{i:06d}" for i in range(12_000)]
        + [f"s/t{i}" for i in range(4_000)]
        + [f"s/u/{uuid.UUID(int=random.getrandbits(128)).hex}" for i in range(3_990)]
        + [f"s/{c}" for c in "ABCDEFGHIJ"]
    )
    random.shuffle(keys)
    await put_raw(raw, [(f"/infrafabric/{namespace}/{k}", k.encode()) for k in keys])
    await put_raw(raw, [(f"/infrafabric/{namespace}/{k}", b"outside") for k in ("r/1", "s", "s0/x", "t/1")])
    async with connect(f"{etcd_server.url}?namespace={namespace}") as bus:
        sent = count_ranges(bus, monkeypatch)
        seen = [e async for e in bus.scan("s/", batch=500)]
        sent = sent[:]
        assert [e.key for e in seen] == sorted(keys)
        assert all(e.value == e.key.encode() for e in seen)
        assert seen == await bus.list("s/")  # same entries, same revisions
    assert len(sent) >= 40 and all(r.limit == 500 for r in sent)
    assert len({r.revision for r in sent[1:]}) == 1  # one snapshot
    assert len(sent) < 4 * 40  # the range-end guesses cost few extra requests


async def test_scan_is_a_snapshot(etcd_server: EtcdServer, namespace: str) -> None:
    async with connect(f"{etcd_server.url}?namespace={namespace}") as bus:
        for i in range(0, 400, 2):
            await bus.put(f"snap/{i:04d}", f"v{i}")
        before = {e.key: e async for e in bus.scan("snap/")}
        seen: list[Entry] = []
        async for entry in bus.scan("snap/", batch=20):
            if not seen:  # the scan has started: change what it has not read yet
                for i in range(1, 400, 2):
                    await bus.put(f"snap/{i:04d}", "created during the scan")
                await bus.put("snap/0398", "updated during the scan")
                await bus.delete("snap/0396")
                await bus.put("snap/9999", "appended during the scan")
            seen.append(entry)
        assert {e.key: e for e in seen} == before
        assert [e.key for e in seen] == sorted(before)
        after = [e.key async for e in bus.scan("snap/")]
        assert len(after) == 400 and "snap/0396" not in after and "snap/9999" in after


async def test_scan_stopped_early_leaves_nothing_behind(
    etcd_server: EtcdServer, namespace: str, raw: Any
) -> None:
    await put_raw(raw, [(f"/infrafabric/{namespace}/e/{i:05d}", b"x") for i in range(2_000)])
    async with connect(f"{etcd_server.url}?namespace={namespace}") as bus:
        tasks_before = asyncio.all_tasks()
        seen = []
        async for entry in bus.scan("e/", batch=100):
            seen.append(entry.key)
            if len(seen) == 10:
                break
        for _ in range(5):  # let the loop finalize the abandoned generator
            await asyncio.sleep(0)
        assert seen == [f"e/{i:05d}" for i in range(10)]
        left = asyncio.all_tasks() - tasks_before
        assert [t for t in left if "_AioCall" not in getattr(t.get_coro(), "__qualname__", "")] == []
        assert (await bus.get("e/00001")) is not None  # the bus carries on


async def test_scan_of_a_compacted_revision_raises_compacted(namespace: str) -> None:
    with EtcdServer() as server:
        async with connect(f"{server.url}?namespace={namespace}") as bus:
            for i in range(50):
                await bus.put(f"c/{i:03d}", "x")
            scan = bus.scan("c/", batch=10)
            first = await anext(scan)
            assert first.key == "c/000"
            last = await bus.put("c/000", "rewritten")  # a revision after the scan's
            client = aetcd.Client(server.host, server.port, timeout=5)
            try:
                await client.compact(last)
            finally:
                await client.close()
            with pytest.raises(CompactedError):
                await asyncio.wait_for(drain(scan), 30)
            assert [e.key async for e in bus.scan("c/")][:1] == ["c/000"]  # a new scan works


async def test_a_scan_page_is_bounded_by_the_deadline(namespace: str) -> None:
    with EtcdServer() as server:
        async with connect(f"{server.url}?namespace={namespace}&timeout=1") as bus:
            for i in range(30):
                await bus.put(f"p/{i:03d}", "x")
            scan = bus.scan("p/", batch=10)
            got = [await anext(scan) for _ in range(10)]  # the first page
            assert got[-1].key == "p/009"
            server.pause()
            try:
                assert server.pid is not None
                async with asyncio.timeout(30):
                    while not stopped(server.pid):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                with pytest.raises(BusTimeoutError):
                    await asyncio.wait_for(anext(scan), 30)
            finally:
                server.resume()


def test_range_guesses_tile_the_prefix() -> None:
    """Paging with guessed range ends, simulated on sorted keys: every key once,
    in order, and etcd counts a small multiple of the keys (not a quadratic)."""
    base = b"/infrafabric/ns/"
    end = b"/infrafabric/ns0"
    n = 50_000
    shapes = {
        "padded": [f"log/{i:08d}" for i in range(n)],
        "unpadded": [f"log/{i}" for i in range(n)],
        "random": [uuid.UUID(int=random.getrandbits(128)).hex for _ in range(n)],
        "clusters": [f"{c}/{i:06d}" for c in "aklz" for i in range(n // 4)] + ["zz" * 300],
    }
    for name, shape in shapes.items():
        keys = sorted(base + k.encode() for k in shape)
        start, stop, guess = base, end, _RangeGuess(base, end)
        out: list[bytes] = []
        requests = counted = 0
        while True:
            lo, hi = bisect.bisect_left(keys, start), bisect.bisect_left(keys, stop)
            requests += 1
            counted += hi - lo  # what etcd walks to count the range
            page = keys[lo : min(hi, lo + 500)]
            out += page
            if hi - lo > 500:
                start = page[-1] + b"\0"
                stop = guess.after_page(page[0], page[-1], start)
            elif stop == end:
                break
            else:
                start, stop = stop, guess.after_range(stop)
        assert out == keys, name
        assert requests < 4 * n / 500, name
        assert counted < 20 * n, name  # always going to the end: n * n / 1000


async def test_scan_streams_100k_entries(namespace: str) -> None:
    """A 100k-entry scan pages through all of it, in key order (its speed is
    `ifctl bench`'s business, not a test's)."""
    value = b"v" * 290
    with EtcdServer() as server:
        client = aetcd.Client(server.host, server.port, timeout=30)
        try:
            await put_raw(client, [(f"/infrafabric/{namespace}/w/{i:08d}", value) for i in range(100_000)])
        finally:
            await client.close()
        async with connect(f"{server.url}?namespace={namespace}") as bus:
            await assert_scan_streams(bus, "w/", 100_000)
