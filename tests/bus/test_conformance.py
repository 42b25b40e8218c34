"""The conformance suite: every test runs on memory://, nats:// and etcd://,
each against a real server started by the session fixtures."""

from __future__ import annotations

import asyncio

import pytest

from infrafabric.bus import EventBus, EventKind, Message, WatchEvent, connect
from infrafabric.errors import BadKeyError, BadRevisionError, BusUnavailableError, ConfigurationError

EVENT_WAIT = 5.0  # a guard against hangs, never a latency assertion


async def next_events(watch: object, n: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async with asyncio.timeout(EVENT_WAIT):
        async for event in watch:  # type: ignore[attr-defined]
            out.append(event)
            if len(out) == n:
                break
    return out


# -- create / update / delete ---------------------------------------------------


async def test_create_only_if_absent(bus: EventBus) -> None:
    rev = await bus.create("tasks/P0.1.1", b"first")
    assert isinstance(rev, int) and rev > 0
    assert await bus.create("tasks/P0.1.1", b"second") is None
    entry = await bus.get("tasks/P0.1.1")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"first", rev)


async def test_create_many_creates_the_absent_keys_and_names_the_present(bus: EventBus) -> None:
    await bus.put("many/k2", b"there")
    await bus.put("many/gone", b"x")
    assert await bus.delete("many/gone")  # a deleted key (a NATS delete marker) can be created again
    keys = [f"many/k{i}" for i in range(bus.batch_limit + 5)] + ["many/gone"]  # more than one group
    revisions = await bus.create_many([(k, k.encode()) for k in keys])
    assert revisions[2] is None and all(r is not None for i, r in enumerate(revisions) if i != 2)
    for key, rev in zip(keys, revisions, strict=True):
        entry = await bus.get(key)
        assert entry is not None and entry.revision == (rev if rev is not None else entry.revision)
        assert entry.value == (b"there" if key == "many/k2" else key.encode())
    # a group without any present key is one write, all of it
    fresh = await bus.create_many([(f"fresh/{i}", b"v") for i in range(10)])
    assert all(isinstance(r, int) for r in fresh)
    assert (await bus.which_exist([f"fresh/{i}" for i in range(12)])) == {f"fresh/{i}" for i in range(10)}
    assert await bus.which_exist(["many/gone-for-good", "many/k2"]) == {"many/k2"}
    assert await bus.delete("many/k2")
    assert await bus.which_exist(["many/k2", "many/k3"]) == {"many/k3"}  # a delete marker is no key
    with pytest.raises(BadKeyError):
        await bus.create_many([("ok", b"x"), ("bad key", b"y")])
    assert await bus.get("ok") is None  # nothing written when a key is bad


async def test_which_exist_across_several_groups(bus: EventBus) -> None:
    """More keys than one round trip covers: the groups (read concurrently) each answer for theirs."""
    count = bus.batch_limit + 7
    made = await bus.create_many([(f"wide/{i}", b"v") for i in range(0, count, 2)])
    assert all(isinstance(r, int) for r in made)
    asked = [f"wide/{i}" for i in range(count)] + ["elsewhere/0"]
    assert await bus.which_exist(asked) == {f"wide/{i}" for i in range(0, count, 2)}


async def test_get_absent_is_none(bus: EventBus) -> None:
    assert await bus.get("nothing/here") is None


async def test_put_overwrites_and_revisions_increase(bus: EventBus) -> None:
    revs = [await bus.put("k", f"v{i}") for i in range(5)]
    assert revs == sorted(revs) and len(set(revs)) == 5
    other = await bus.put("other", "x")
    assert other > revs[-1]
    entry = await bus.get("k")
    assert entry is not None and entry.value == b"v4" and entry.revision == revs[-1]
    assert await bus.revision() >= other


async def test_update_is_compare_and_swap(bus: EventBus) -> None:
    rev = await bus.create("cas", "a")
    assert rev is not None
    new = await bus.update("cas", "b", rev)
    assert new is not None and new > rev
    assert await bus.update("cas", "c", rev) is None  # stale revision loses, no exception
    entry = await bus.get("cas")
    assert entry is not None and (entry.value, entry.revision) == (b"b", new)
    assert await bus.update("absent", "x", 1) is None


async def test_delete_guarded_and_unguarded(bus: EventBus) -> None:
    rev = await bus.create("d/1", "x")
    assert rev is not None
    assert await bus.delete("d/1", revision=rev + 1000) is False
    assert await bus.get("d/1") is not None
    assert await bus.delete("d/1", revision=rev) is True
    assert await bus.get("d/1") is None
    assert await bus.delete("d/1") is False
    assert await bus.update("d/1", "y", rev) is None
    again = await bus.create("d/1", "z")  # a deleted key can be created again
    assert again is not None and again > rev
    assert await bus.delete("d/1") is True


async def test_values_are_bytes_and_round_trip(bus: EventBus) -> None:
    blob = bytes(range(256)) * 400  # 100 KiB with NULs and high bytes
    await bus.put("blob", blob)
    await bus.put("text", "héllo ✓")
    blob_entry, text_entry = await bus.get("blob"), await bus.get("text")
    assert blob_entry is not None and blob_entry.value == blob
    assert text_entry is not None and text_entry.text() == "héllo ✓"


@pytest.mark.parametrize("n", [20])
async def test_concurrent_create_exactly_one_winner(bus_url: str, n: int) -> None:
    buses = [await connect(bus_url) for _ in range(n)]
    try:
        results = await asyncio.gather(
            *(b.create("race/one", f"c{i}") for i, b in enumerate(buses))
        )
        winners = [i for i, r in enumerate(results) if r is not None]
        assert len(winners) == 1
        entry = await buses[0].get("race/one")
        assert entry is not None and entry.value == f"c{winners[0]}".encode()
    finally:
        await asyncio.gather(*(b.close() for b in buses))


async def test_concurrent_update_exactly_one_winner(bus_url: str) -> None:
    buses = [await connect(bus_url) for _ in range(20)]
    try:
        rev = await buses[0].create("race/cas", "0")
        assert rev is not None
        for round_ in range(3):
            results = await asyncio.gather(
                *(b.update("race/cas", f"{round_}:{i}", rev) for i, b in enumerate(buses))
            )
            winners = [(i, r) for i, r in enumerate(results) if r is not None]
            assert len(winners) == 1, results
            i, rev = winners[0]
            entry = await buses[0].get("race/cas")
            assert entry is not None and entry.value == f"{round_}:{i}".encode()
            assert entry.revision == rev
    finally:
        await asyncio.gather(*(b.close() for b in buses))


# -- list ---------------------------------------------------------------------------


async def test_list_prefix(bus: EventBus) -> None:
    for key in ["tasks/P0.1.1", "tasks/P0.1.2", "tasks/P1.1", "tasksX/a", "swarms/s1", "tasks"]:
        await bus.put(key, key)
    await bus.delete("tasks/P0.1.2")
    got = [e.key for e in await bus.list("tasks/")]
    assert got == ["tasks/P0.1.1", "tasks/P1.1"]
    assert [e.key for e in await bus.list("tasks/P0.")] == ["tasks/P0.1.1"]
    assert [e.key for e in await bus.list("tasks")] == ["tasks", "tasks/P0.1.1", "tasks/P1.1",
                                                        "tasksX/a"]
    everything = await bus.list()
    assert len(everything) == 5 and everything == sorted(everything, key=lambda e: e.key)
    assert all(e.value == e.key.encode() for e in everything)
    assert await bus.list("nobody/") == []


async def test_namespaces_are_isolated(bus_url: str) -> None:
    base = bus_url.split("?")[0]
    async with connect(f"{base}?namespace=iso_a") as a, connect(f"{base}?namespace=iso_b") as b:
        await a.put("shared/key", "a")
        await b.delete("shared/key")
        await b.put("shared/key", "b")
        entry = await a.get("shared/key")
        assert entry is not None and entry.value == b"a"
        assert [e.value for e in await b.list("shared/")] == [b"b"]
        await a.delete("shared/key")
        await b.delete("shared/key")


async def test_scan_streams_every_entry_once(bus: EventBus) -> None:
    for i in range(250):
        await bus.put(f"log/{i:06d}", f"entry {i}")
    await bus.put("logx/other", "not under the prefix")
    await bus.delete("log/000007")
    seen = [e async for e in bus.scan("log/", batch=16)]
    assert [e.key for e in seen] == [f"log/{i:06d}" for i in range(250) if i != 7]
    assert all(e.value == f"entry {int(e.key[4:])}".encode() for e in seen)
    assert [e async for e in bus.scan("nothing/", batch=5)] == []
    with pytest.raises(ConfigurationError):
        [e async for e in bus.scan("log/", batch=0)]


# -- watch ----------------------------------------------------------------------------


async def test_watch_delivers_in_order_under_prefix(bus: EventBus) -> None:
    async with bus.watch("tasks/") as watch:
        r1 = await bus.put("tasks/a", "1")
        await bus.put("other/x", "ignored")
        r2 = await bus.put("tasks/b", "2")
        r3 = await bus.update("tasks/a", "3", r1)
        assert r3 is not None
        await bus.delete("tasks/b")
        events = await next_events(watch, 4)
    assert [(e.kind, e.key, e.value) for e in events] == [
        (EventKind.PUT, "tasks/a", b"1"),
        (EventKind.PUT, "tasks/b", b"2"),
        (EventKind.PUT, "tasks/a", b"3"),
        (EventKind.DELETE, "tasks/b", None),
    ]
    revs = [e.revision for e in events]
    assert revs[:3] == [r1, r2, r3] and revs == sorted(revs) and len(set(revs)) == 4


async def test_watch_without_start_sees_only_later_writes(bus: EventBus) -> None:
    await bus.put("w/before", "old")
    async with bus.watch("w/") as watch:
        await bus.put("w/after", "new")
        (event,) = await next_events(watch, 1)
    assert event.key == "w/after"


async def test_watch_from_start_revision_replays(bus: EventBus) -> None:
    r1 = await bus.put("h/a", "1")
    r2 = await bus.put("h/b", "2")
    await bus.put("h/c", "3")
    async with bus.watch("h/", start_revision=r2) as watch:
        events = await next_events(watch, 2)
        assert [e.key for e in events] == ["h/b", "h/c"]
        r4 = await bus.put("h/d", "4")
        (live,) = await next_events(watch, 1)
    assert live.key == "h/d" and live.revision == r4 and r1 < r2


async def test_watch_resume_from_last_revision_loses_nothing(bus: EventBus) -> None:
    """What a watch does after a reconnect, done by hand: a new watch from
    last_revision + 1 continues exactly where the old one stopped."""
    async with bus.watch("r/") as first:
        for i in range(5):
            await bus.put(f"r/{i}", str(i))
        seen = await next_events(first, 3)
    last = first.last_revision
    assert last == seen[-1].revision
    for i in range(5, 8):
        await bus.put(f"r/{i}", str(i))
    async with bus.watch("r/", start_revision=last + 1) as second:
        rest = await next_events(second, 5)
    assert [e.key for e in seen + rest] == [f"r/{i}" for i in range(8)]


async def test_watch_prefix_inside_segment(bus: EventBus) -> None:
    async with bus.watch("tasks/P0.") as watch:
        await bus.put("tasks/P1.1", "no")
        await bus.put("tasks/P0.2", "yes")
        (event,) = await next_events(watch, 1)
    assert event.key == "tasks/P0.2"


async def test_many_watchers_fan_out(bus: EventBus) -> None:
    watches = [bus.watch("fan/") for _ in range(3)]
    for w in watches:
        await w.start()
    for i in range(10):
        await bus.put(f"fan/{i}", str(i))
    for w in watches:
        events = await next_events(w, 10)
        assert [e.key for e in events] == [f"fan/{i}" for i in range(10)]
        await w.close()


# -- pub/sub ---------------------------------------------------------------------------


async def test_publish_fans_out_to_every_subscriber(bus_url: str) -> None:
    async with connect(bus_url) as pub, connect(bus_url) as sub_bus:
        subs = [sub_bus.subscribe("swarms/s1/tasks") for _ in range(2)]
        subs.append(pub.subscribe("swarms/s1/tasks"))
        other = sub_bus.subscribe("swarms/s2/tasks")
        for s in [*subs, other]:
            await s.start()
        for i in range(20):
            await pub.publish("swarms/s1/tasks", f"m{i}")
        for s in subs:
            got: list[Message] = []
            async with asyncio.timeout(EVENT_WAIT):
                async for msg in s:
                    got.append(msg)
                    if len(got) == 20:
                        break
            assert [m.data for m in got] == [f"m{i}".encode() for i in range(20)]
            assert {m.subject for m in got} == {"swarms/s1/tasks"}
        await pub.publish("swarms/s2/tasks", "for-s2")
        msg = await other.get(EVENT_WAIT)
        assert msg.data == b"for-s2"
        for s in [*subs, other]:
            await s.close()


async def test_publish_without_subscribers_is_fine(bus: EventBus) -> None:
    await bus.publish("nobody/listens", "x")
    async with bus.subscribe("late/sub") as sub:
        await bus.publish("late/sub", "y")
        assert (await sub.get(EVENT_WAIT)).data == b"y"


# -- validation and lifecycle -------------------------------------------------------------

BAD_KEYS = ["", "/lead", "trail/", "a//b", "has space", "tab\tkey", "ümlaut", "x" * 1025, "a/*/b"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_rejected_before_io(bus: EventBus, key: str) -> None:
    for call in (bus.get(key), bus.put(key, "v"), bus.create(key, "v"), bus.update(key, "v", 1),
                 bus.delete(key), bus.publish(key, "v")):
        with pytest.raises(BadKeyError) as info:
            await call
        assert info.value.exit_code == 2
        assert "key" in str(info.value) or "subject" in str(info.value)
    with pytest.raises(BadKeyError):
        bus.subscribe(key)


async def test_bad_prefix_and_revision_rejected(bus: EventBus) -> None:
    with pytest.raises(BadKeyError):
        await bus.list("a//")
    with pytest.raises(BadKeyError):
        bus.watch("sp ace/")
    with pytest.raises(BadRevisionError):
        await bus.update("k", "v", 0)
    with pytest.raises(BadRevisionError):
        bus.watch("k/", start_revision=-3)


async def test_health_check_reports_ok(bus: EventBus) -> None:
    health = await bus.health_check()
    assert health.ok and bool(health)
    assert health.backend == bus.scheme and health.latency_ms is not None and health.detail


async def test_closed_bus_fails_typed(bus_url: str) -> None:
    bus = await connect(bus_url)
    watch = bus.watch("c/")
    await watch.start()
    await bus.close()
    with pytest.raises(BusUnavailableError):
        await bus.get("c/x")
    async with asyncio.timeout(EVENT_WAIT):
        assert [e async for e in watch] == []  # closing the bus ends its watches
    assert not await bus.health_check()
