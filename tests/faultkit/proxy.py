"""A small loopback TCP proxy for network faults between clients and one node.

Put it in front of a server and give clients its port instead of the
server's; then switch its mode while they talk::

    proxy = await TcpProxy("127.0.0.1", node.port).start()
    url = f"etcd://127.0.0.1:{proxy.port}"
    proxy.blackhole()       # bytes vanish both ways; connections stay open (a partition)
    proxy.delay(0.2)        # every chunk is delivered 0.2 s late, in order
    proxy.forward()         # heal
    proxy.reset()           # drop every open connection (RST-like close)
    await proxy.close()

Modes apply to open connections at once, and to new ones. Nothing leaves
127.0.0.1 unless asked; no root, ``tc`` or iptables needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Self

__all__ = ["TcpProxy"]

_CHUNK = 65536


class TcpProxy:
    """Forwards ``host:port`` (``port`` 0: any free one) to ``target``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.mode = "forward"
        self.latency = 0.0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        #: bytes dropped while blackholed, and connections accepted
        self.dropped = 0
        self.accepted = 0

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def forward(self) -> None:
        self.mode, self.latency = "forward", 0.0

    def blackhole(self) -> None:
        """Drop every byte both ways; connections stay open and silent."""
        self.mode = "blackhole"

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` late (order kept)."""
        self.mode, self.latency = "delay", max(0.0, seconds)

    def reset(self) -> None:
        """Close every open connection now (both sides see it end)."""
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.reset()  # every connection handler then sees its streams end and returns
            if self._conns:
                _, stuck = await asyncio.wait(list(self._conns), timeout=2.0)
                for task in stuck:
                    task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.mode == "blackhole":  # a partitioned node: the connect itself gets nowhere
                while self.mode == "blackhole" and not reader.at_eof():
                    data = await reader.read(_CHUNK)
                    if not data:
                        return
                    self.dropped += len(data)
                if reader.at_eof():
                    return
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._conns.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def send() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(_CHUNK):
                if self.mode == "blackhole":
                    self.dropped += len(data)
                    continue
                queue.put_nowait((time.monotonic() + (self.latency if self.mode == "delay" else 0.0), data))
            queue.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            with contextlib.suppress(Exception):
                writer.transport.abort()
