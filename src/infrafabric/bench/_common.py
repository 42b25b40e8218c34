"""Pieces every ``ifctl bench`` benchmark shares: the error, warm-up and
segment sizes, interleaved latency sampling, concurrent throughput runs in
ABBA segments, report entries and target verdicts, fresh namespaces and their
cleanup, and the helper processes (a ``ready`` line, then their protocol).

A benchmark reports; it never fails because of a timing. :class:`BenchError`
is for a run that could not be carried out (a server that is not there, a
create of a fresh key that lost, a message that never arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from infrafabric.bench.stats import ratio, summarize
from infrafabric.bus.url import BusURL, parse_url
from infrafabric.errors import InfraFabricError

if TYPE_CHECKING:
    from infrafabric.bus import EventBus

__all__ = [
    "BenchError",
    "Progress",
    "Side",
    "WorkerProcess",
    "clean_namespace",
    "default_warmup",
    "interleaved",
    "latency_entry",
    "machine_info",
    "nats_scope",
    "segmented_throughput",
    "stdin_signal",
    "target_row",
    "throughput_rounds",
    "version",
    "with_namespace",
]

#: progress(phase, done, total), called between samples (never inside a timed window)
Progress = Callable[[str, int, int], None]


class BenchError(InfraFabricError):
    """The benchmark could not run (not a timing verdict: timings never fail it)."""


#: the engine clients the raw side of a benchmark calls directly
_RAW_CLIENTS = ("nats", "aetcd", "grpc")


@contextlib.asynccontextmanager
async def raw_client_errors() -> AsyncIterator[None]:
    """Report a failure of a raw engine client (called directly, outside the
    bus's error translation) as a :class:`BenchError` naming the client,
    rather than as an internal error."""
    try:
        yield
    except Exception as exc:
        module = type(exc).__module__.split(".", 1)[0]
        if isinstance(exc, InfraFabricError) or module not in _RAW_CLIENTS:
            raise
        raise BenchError(f"the raw {module} client failed: {type(exc).__name__}: {exc}",
                         hint="the engine was not ready or went away; run the benchmark again") from exc


class Side(Protocol):
    """One side of a comparison ("ours" or "raw")."""

    @property
    def side(self) -> str: ...


S = TypeVar("S", bound=Side)


def default_warmup(n: int) -> int:
    """Samples discarded before measuring: 10 % of n, at least 10, at most 200."""
    return min(200, max(10, n // 10))


def throughput_rounds(n: int) -> int:
    """Segments per side of a throughput run: n/100, between 2 and 8."""
    return max(2, min(8, n // 100))


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "infrafabric": version("infrafabric")}


def started_at(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


async def interleaved(phase: str, sides: Sequence[S], total: int, warmup: int,
                      sample: Callable[[S, int], Awaitable[int | None]],
                      progress: Progress | None) -> dict[str, list[int]]:
    """Run ``sample`` for i in range(total) on every side, alternating which
    side goes first; keep the samples after the first ``warmup``. A sample of
    None is a lost message (not recorded)."""
    out: dict[str, list[int]] = {s.side: [] for s in sides}
    step = max(1, total // 100)
    for i in range(total):
        order = sides if i % 2 == 0 else sides[::-1]
        for s in order:
            ns = await sample(s, i)
            if i >= warmup and ns is not None:
                out[s.side].append(ns)
        if progress is not None and (i % step == 0 or i == total - 1):
            progress(phase, i + 1, total)
    return out


def latency_entry(label: str, what: str, samples: dict[str, list[int]],
                  calls: dict[str, str]) -> dict[str, Any]:
    """The report entry of one latency operation: ours, raw (None if there is
    no raw side), ours/raw on p50 and p99, and the calls each side made."""
    ours = summarize(samples["ours"])
    raw = summarize(samples["raw"]) if "raw" in samples else None
    return {
        "label": label,
        "what": what,
        "ours": ours,
        "raw": raw,
        "ratio": ratio(ours["p50"], raw["p50"]) if raw else None,
        "ratio_p99": ratio(ours["p99"], raw["p99"]) if raw else None,
        "calls": calls,
    }


async def run_concurrently(op: Callable[[int], Awaitable[None]], start: int, count: int,
                           inflight: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) to run ``op(i)`` for i in
    start .. start+count-1 with ``inflight`` of them in flight."""
    indices = iter(range(start, start + count))

    async def worker() -> None:
        for i in indices:
            await op(i)

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(inflight, count)))))
    return time.perf_counter() - t0, time.process_time() - c0


async def segmented_throughput(
    phase: str, sides: Sequence[tuple[str, Callable[[int], Awaitable[None]]]], n: int,
    inflight: int, progress: Progress | None,
) -> dict[str, dict[str, Any]]:
    """``n`` operations per side with ``inflight`` in flight, in
    :func:`throughput_rounds` segments run ABBA ABBA ..., so load that changes
    during the run (a shared machine) hits every side alike. Operation i of a
    side is ``op(i)`` (i in 0..n-1, each once). Per side: ops, seconds,
    ops_per_s and the CPU time this (client) process spent per operation,
    which is what limits a Python client and is far less sensitive to other
    load than ops/s."""
    rounds = throughput_rounds(n)
    bounds = [n * k // rounds for k in range(rounds + 1)]
    seconds = {name: 0.0 for name, _ in sides}
    cpu = {name: 0.0 for name, _ in sides}
    plan = [(name, op, k) for k in range(rounds)
            for name, op in (sides if k % 2 == 0 else sides[::-1])]
    for step, (name, op, k) in enumerate(plan):
        if progress is not None:
            progress(phase, step, len(plan))
        wall, used = await run_concurrently(op, bounds[k], bounds[k + 1] - bounds[k], inflight)
        seconds[name] += wall
        cpu[name] += used
    if progress is not None:
        progress(phase, len(plan), len(plan))
    out: dict[str, dict[str, Any]] = {}
    for name, _ in sides:
        s = seconds[name]
        out[name] = {"ops": n, "seconds": round(s, 4),
                     "ops_per_s": round(n / s, 1) if s else None,
                     "client_cpu_us_per_op": round(cpu[name] / n * 1e6, 1)}
    return out


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t,
}


def target_row(tid: str, description: str, operation: str, metric: str, threshold: float,
               value: float | None, *, applies: bool, note: str = "",
               compare: str = "<=") -> dict[str, Any]:
    """One target verdict: ``pass`` is None when the value could not be
    measured here. Reported, never asserted."""
    passed = None if value is None else bool(_COMPARE[compare](value, threshold))
    if value is None:
        note = note or "not measurable here"
    return {"id": tid, "target": description, "operation": operation, "metric": metric,
            "compare": compare, "threshold": threshold, "value": value, "pass": passed,
            "applies": applies, "note": note}


def metric_value(ops: dict[str, dict[str, Any]], op: str, metric: str) -> float | None:
    """``ratio`` or ``side.stat`` (e.g. ``ours.p99``) of operation ``op``, or None."""
    entry = ops.get(op, {})
    if metric == "ratio":
        value = entry.get("ratio")
    else:
        side, _, stat = metric.partition(".")
        value = (entry.get(side) or {}).get(stat)
    return None if value is None else float(value)


def nats_scope(backend: str, server: dict[str, Any]) -> tuple[bool, str]:
    """(applies, note) of a target defined for a durable local NATS
    (``sync_interval: always``) on this backend and server."""
    if backend != "nats":
        return False, "the target is defined for a durable local NATS; shown for comparison"
    if server.get("sync_interval") != "always":
        return False, ("the target is defined for a durable NATS (sync_interval: always); "
                       f"this server's sync_interval is {server.get('sync_interval', 'unknown')}")
    return True, ""


# -- namespaces -----------------------------------------------------------------


def with_namespace(url: str | BusURL, namespace: str) -> str:
    """``url`` with its ``namespace`` option replaced."""
    parsed = url if isinstance(url, BusURL) else parse_url(url)
    return parse_url(dataclasses.replace(
        parsed, options={**parsed.options, "namespace": namespace}).display).display


async def clean_namespace(bus: EventBus, progress: Progress | None, *, inflight: int = 64,
                          phase: str = "cleanup") -> dict[str, Any]:
    """Delete every key of the namespace of ``bus`` (a benchmark's own: it
    wrote nothing else there): keys deleted, and keys left (0). Keys are
    streamed (a board of 100,000 tasks is more than one listing can return
    within the bus's deadline)."""
    entries = [e async for e in bus.scan("")]
    if progress is not None:
        progress(phase, 0, len(entries))
    sem = asyncio.Semaphore(inflight)

    async def drop(key: str) -> None:
        async with sem:
            await bus.delete(key)

    await asyncio.gather(*(drop(e.key) for e in entries))
    if progress is not None:
        progress(phase, len(entries), len(entries))
    return {"keys_deleted": len(entries), "left": len([e async for e in bus.scan("")])}


# -- helper processes -------------------------------------------------------------


def stdin_signal(loop: asyncio.AbstractEventLoop, *, until_eof: bool = False) -> asyncio.Future[bytes]:
    """In a helper process: a future that completes with the first line on
    stdin (``b""`` if stdin ends first), or with ``until_eof`` once stdin ends
    (the parent's signal to exit). The reading thread is a daemon, so it never
    holds up the exit of the process."""
    fut: asyncio.Future[bytes] = loop.create_future()

    def finish(data: bytes) -> None:
        if not fut.done():
            fut.set_result(data)

    def wait() -> None:
        # os.read on the raw fd: a buffered sys.stdin would hold a lock that
        # makes interpreter shutdown abort while this thread still waits
        got = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(0, 65536):
                got += chunk
                if not until_eof and b"\n" in got:
                    got = got.split(b"\n", 1)[0] + b"\n"
                    break
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(finish, got)

    threading.Thread(target=wait, name="stdin-signal", daemon=True).start()
    return fut


class WorkerProcess:
    """A helper subprocess ``python -m MODULE ARGS...`` that prints ``ready``
    on stdout once it is set up; after that, stdout is its protocol. Its
    stderr goes to a file (never read during the run, so a pipe cannot fill
    up), whose tail explains a failure. Closing its stdin tells it to stop."""

    proc: asyncio.subprocess.Process
    errors: IO[bytes]

    def __init__(self, what: str) -> None:
        self.what = what

    @classmethod
    async def start(cls, what: str, module: str, args: Sequence[str],
                    ready_within: float) -> WorkerProcess:
        """Start it and wait up to ``ready_within`` s for its ``ready`` line
        (BenchError, with its stderr tail, if it does not come)."""
        self = cls(what)
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, *args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self.errors,
            )
            try:
                line = await self.readline(ready_within)
            except TimeoutError:
                line = f"not ready within {ready_within:g} s".encode()
            if line.strip() != b"ready":
                await self.stop()
                tail = self.error_tail()
                raise BenchError(f"the {what} process did not start: "
                                 f"{line.decode(errors='replace').strip() or 'no output'}"
                                 + (f"\n{tail}" if tail else ""))
        except BaseException:
            await self.close()
            raise
        return self

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.proc.stdout is not None
        return self.proc.stdout

    async def readline(self, wait_s: float) -> bytes:
        """Its next stdout line (``b""`` once it ended); TimeoutError after ``wait_s``."""
        async with asyncio.timeout(wait_s):
            return await self.stdout.readline()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def error_tail(self, lines: int = 5) -> str:
        self.errors.seek(0)
        err = self.errors.read().decode(errors="replace").strip()
        return "\n".join(err.splitlines()[-lines:])

    async def stop(self) -> None:
        """Close its stdin (the signal to exit), wait 5 s, then kill it."""
        if not hasattr(self, "proc"):
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            pass
        finally:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                with contextlib.suppress(Exception):
                    await self.proc.wait()

    async def close(self) -> None:
        try:
            await self.stop()
        finally:
            self.errors.close()


def run_worker(coro: Coroutine[Any, Any, object]) -> int:
    """Run a benchmark worker process's main coroutine; its exit code: 0 done,
    1 failed (one line on stderr, no traceback), 130 interrupted."""
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


@dataclasses.dataclass
class RunStart:
    """What a benchmark run starts with: its id, a fresh namespace on the
    given server, and the clocks its report is stamped with."""

    run: str
    namespace: str
    url: str
    parsed: BusURL
    warmup: int
    server_info: dict[str, Any]
    started: float
    t_start: float

    def duration_s(self) -> float:
        return round(time.perf_counter() - self.t_start, 2)


def start_run(url: str, n: int, inflight: int, warmup: int | None,
              server: dict[str, Any] | None) -> RunStart:
    """Validate the common parameters and open a run in a fresh namespace."""
    if n < 1:
        raise ValueError("n must be at least 1")
    if inflight < 1:
        raise ValueError("inflight must be at least 1")
    run = uuid.uuid4().hex[:10]
    namespace = f"bench{run}"
    run_url = with_namespace(url, namespace)
    return RunStart(run, namespace, run_url, parse_url(run_url),
                    default_warmup(n) if warmup is None else warmup, dict(server or {}),
                    time.time(), time.perf_counter())
