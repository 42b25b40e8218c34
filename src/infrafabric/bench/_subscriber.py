"""The subscriber process of the cross-process delivery benchmarks.

``python -m infrafabric.bench._subscriber MODE URL SUBJECT``

MODE is ``ours`` (subscribe through :func:`infrafabric.bus.connect` to the
logical SUBJECT; URL carries the namespace), ``nats`` (core NATS
``subscribe`` on SUBJECT, no InfraFabric code), ``etcd`` (aetcd
``watch_prefix`` of ``SUBJECT/``: each message is a put of a fresh key under
it, which is how our etcd bus carries pub/sub too), ``push``
(:meth:`IFCoordinator.pushed_tasks` of the swarm SUBJECT; the marker is the
task's ``description``) or ``blockers`` (:meth:`IFCoordinator.blockers`;
SUBJECT is ignored, the marker is ``blocker_info["bench"]``).

Protocol, one line each on stdout: ``ready`` once the subscription is
established, then for every message received ``SEQ SENT_NS RECV_NS``, where
SENT_NS is the ``time.monotonic_ns()`` the sender embedded in the message
(the marker ``SEQ SENT_NS ...``) and RECV_NS is this process's
``time.monotonic_ns()`` taken as soon as the message (for the coordinator
modes: the decoded task or report) is handed to the subscriber. CLOCK_MONOTONIC is
one system-wide clock on Linux, so the difference is a valid cross-process
latency. The process exits when its stdin is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable

from infrafabric.bench._common import run_worker, stdin_signal
from infrafabric.bench._wire import parse

__all__ = ["main", "run"]


def _report(data: bytes) -> None:
    recv = time.monotonic_ns()
    try:
        seq, sent = parse(data)
    except ValueError:
        return
    os.write(1, f"{seq} {sent} {recv}\n".encode())


async def _ours(url: str, subject: str, ready: Callable[[], None],
                done: Awaitable[object]) -> None:
    from infrafabric.bus import connect

    async with connect(url) as bus, bus.subscribe(subject) as sub:
        ready()

        async def consume() -> None:
            async for msg in sub:
                _report(msg.data)

        await _until(consume(), done)


async def _nats(url: str, subject: str, ready: Callable[[], None],
                done: Awaitable[object]) -> None:
    import nats

    nc = await nats.connect(url.split("?", 1)[0], allow_reconnect=False)
    try:
        sub = await nc.subscribe(subject)
        await nc.flush()
        ready()

        async def consume() -> None:
            async for msg in sub.messages:
                _report(msg.data)

        await _until(consume(), done)
    finally:
        await nc.close()


async def _etcd(url: str, subject: str, ready: Callable[[], None],
                done: Awaitable[object]) -> None:
    import aetcd

    from infrafabric.bus.url import parse_url

    host, port = parse_url(url).hosts[0]
    client = aetcd.Client(host, port)
    await client.connect()
    try:
        watch = await client.watch_prefix(subject.encode() + b"/")
        ready()

        async def consume() -> None:
            async for event in watch:
                _report(bytes(event.kv.value))

        await _until(consume(), done)
        with contextlib.suppress(Exception):
            await watch.cancel()
    finally:
        await client.close()


async def _push(url: str, swarm: str, ready: Callable[[], None],
                done: Awaitable[object]) -> None:
    from infrafabric.bus import connect
    from infrafabric.coordinator import IFCoordinator

    async with connect(url) as bus, IFCoordinator(bus).pushed_tasks(swarm) as feed:
        ready()

        async def consume() -> None:
            async for task in feed:
                _report(task.description.encode())

        await _until(consume(), done)


async def _blockers(url: str, subject: str, ready: Callable[[], None],
                    done: Awaitable[object]) -> None:
    from infrafabric.bus import connect
    from infrafabric.coordinator import IFCoordinator

    async with connect(url) as bus, IFCoordinator(bus).blockers() as feed:
        ready()

        async def consume() -> None:
            async for report in feed:
                info = report.get("blocker_info")
                mark = info.get("bench") if isinstance(info, dict) else None
                if isinstance(mark, str):
                    _report(mark.encode())

        await _until(consume(), done)


async def _until(work: Awaitable[None], done: Awaitable[object]) -> None:
    """Run ``work`` until ``done`` completes (or ``work`` ends), then cancel the other."""
    tasks = [asyncio.ensure_future(work), asyncio.ensure_future(done)]
    finished, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for task in finished:
        task.result()


_MODES = {"ours": _ours, "nats": _nats, "etcd": _etcd, "push": _push, "blockers": _blockers}


async def run(mode: str, url: str, subject: str) -> None:
    """Subscribe, say ``ready``, report every message until stdin closes."""
    done = stdin_signal(asyncio.get_running_loop(), until_eof=True)

    def ready() -> None:
        os.write(1, b"ready\n")

    await _MODES[mode](url, subject, ready, done)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in _MODES:
        print("usage: python -m infrafabric.bench._subscriber ours|nats|etcd|push|blockers "
              "URL SUBJECT",
              file=sys.stderr)
        return 2
    return run_worker(run(*argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
