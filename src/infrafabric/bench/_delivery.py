"""Timing of one-way delivery (publish→subscribe, push, blocker): the
receiving end, in another process or in this one.

The sender embeds ``time.monotonic_ns()`` in each message; the receiver
stamps ``time.monotonic_ns()`` as soon as the message is handed to it.
CLOCK_MONOTONIC is one system-wide clock on Linux, so receive - send is a
valid latency across processes. A ``ready`` line from the subscriber process
plus a ping handshake (seq -1) guarantee nothing is sent before the
subscription is live end to end; :meth:`Receiver.measure` sends the next
message only after the previous one arrived (plus a pause), so the figure is
latency, not queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from infrafabric.bench._common import BenchError, WorkerProcess

__all__ = ["InProcessReceiver", "ProcessReceiver", "Receiver", "Send"]

#: send(seq): send message ``seq`` carrying the time.monotonic_ns() taken just before
Send = Callable[[int], Awaitable[None]]
SUBSCRIBER_MODULE = "infrafabric.bench._subscriber"


class Receiver(ABC):
    """The receiving end of a delivery: yields (seq, latency_ns)."""

    def __init__(self, side: str, send: Send, timeout: float) -> None:
        self.side = side
        self.send = send
        self.timeout = timeout
        self.latency: dict[int, int] = {}
        self.waiters: dict[int, asyncio.Future[int]] = {}
        self.lost = 0

    def _arrived(self, seq: int, sent: int, recv: int) -> None:
        self.latency[seq] = recv - sent
        fut = self.waiters.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(recv - sent)

    async def sync(self) -> None:
        """Ping (seq -1) until one arrives: the subscription is live end to end."""
        deadline = time.monotonic() + self.timeout
        while -1 not in self.latency:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.side} subscriber never received a ping "
                                 f"within {self.timeout:g} s")
            await self.send(-1)
            with contextlib.suppress(TimeoutError):
                await self._wait(-1, 0.05)

    async def _wait(self, seq: int, wait_s: float) -> int:
        if seq in self.latency:
            return self.latency[seq]
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters[seq] = fut
        try:
            async with asyncio.timeout(wait_s):
                return await fut
        finally:
            self.waiters.pop(seq, None)

    async def measure(self, i: int, pace_s: float) -> int | None:
        """Send message ``i``, wait for it to arrive; its latency, or None if lost."""
        await self.send(i)
        try:
            latency = await self._wait(i, self.timeout)
        except TimeoutError:
            self.lost += 1
            return None
        if pace_s > 0:
            await asyncio.sleep(pace_s)
        return latency

    @abstractmethod
    async def close(self) -> None: ...


class ProcessReceiver(Receiver):
    """A subscriber subprocess (:mod:`infrafabric.bench._subscriber` with
    ``args``) that prints ``ready``, then ``SEQ SENT_NS RECV_NS`` per message."""

    worker: WorkerProcess
    reader: asyncio.Task[None]

    @classmethod
    async def start(cls, side: str, send: Send, args: Sequence[str],
                    op_timeout: float) -> ProcessReceiver:
        self = cls(side, send, op_timeout)
        self.worker = await WorkerProcess.start(f"{side} subscriber", SUBSCRIBER_MODULE, args,
                                                max(30.0, op_timeout))
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        stdout = self.worker.stdout
        while True:
            line = await stdout.readline()
            if not line:
                return
            try:
                seq, sent, recv = (int(x) for x in line.split())
            except ValueError:
                continue
            self._arrived(seq, sent, recv)

    async def close(self) -> None:
        try:
            await self.worker.close()
        finally:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader


class InProcessReceiver(Receiver):
    """A stream read in this process (memory:// has no second process).

    ``stream`` is already established; ``parse`` turns one of its items into
    (seq, sent_ns), or None to ignore it; ``close`` ends the stream."""

    reader: asyncio.Task[None]
    _close_stream: Callable[[], Awaitable[None]]

    @classmethod
    async def start(cls, side: str, send: Send, stream: AsyncIterator[Any],
                    parse: Callable[[Any], tuple[int, int] | None],
                    close: Callable[[], Awaitable[None]], op_timeout: float) -> InProcessReceiver:
        self = cls(side, send, op_timeout)
        self._close_stream = close

        async def read() -> None:
            async for item in stream:
                recv = time.monotonic_ns()
                parsed = parse(item)
                if parsed is not None:
                    self._arrived(*parsed, recv)

        self.reader = asyncio.create_task(read())
        return self

    async def close(self) -> None:
        await self._close_stream()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader
