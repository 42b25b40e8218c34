"""The writer and verifier processes of ``ifctl bench witness``.

``python -m infrafabric.bench._witness_worker SPEC``, SPEC a JSON object whose
``role`` is one of:

* ``append``: a :class:`~infrafabric.witness.Witness` of its own on ``url``
  appends ``warmup`` entries (not timed), then ``n`` timed ones with
  ``inflight`` appends in flight (1: each append awaited before the next).
* ``raw``: the engine's own client (``spec["raw"]``, see
  :func:`~infrafabric.bench.bus.connect_raw`) creates ``warmup`` + ``n`` fresh
  keys, each holding the bytes of a one-entry block (what a sequential
  append writes), the same way.
* ``verify``: :meth:`Witness.verify` of the chain at ``url``; on memory://
  (one process) it first writes a chain of ``populate`` entries itself. It
  reports its own peak RSS: ``VmHWM`` (reset just before verifying), not
  ``ru_maxrss``, which on Linux also covers the parent's peak (see
  :func:`_ru_maxrss_mb`); that is reported too, as ``ru_maxrss_mb``.

Protocol, one line each on stdout: ``ready`` once connected and warmed up;
then it waits for a line ``go`` on stdin, runs, prints one JSON object (its
result) and exits. A failure: a message on stderr, exit status 1.

Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one system-wide clock on
Linux), so the parent can line up the windows of several writers.
:func:`run_role` is also what the parent calls to run a role in its own
process (memory:// has no second process).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from infrafabric.bench._common import BenchError, Progress, run_concurrently, run_worker, stdin_signal
from infrafabric.bus import EventBus, connect
from infrafabric.bus.layout import ENTRIES
from infrafabric.witness import GENESIS, Witness, WitnessEntry
from infrafabric.witness.log import encode_block, entry_key

__all__ = ["COMPONENT", "OPERATION", "block_bytes", "entry_fields", "main", "run_role",
           "write_chain"]

COMPONENT = "IF.bench"
OPERATION = "task_claimed"
#: creates in flight while writing a chain to verify
CHAIN_INFLIGHT = 256


def entry_fields(writer: int, i: int) -> dict[str, Any]:
    """The fields of entry ``i`` of writer ``writer`` (a typical coordinator entry)."""
    return {"component": COMPONENT, "operation": OPERATION,
            "params": {"task_id": f"w{writer}-{i}", "swarm_id": f"bench-w{writer}", "attempt": 1},
            "actor": f"bench-w{writer}", "trace_id": f"bench-trace-{writer}"}


def block_bytes() -> bytes:
    """The bytes of a one-entry block: what a sequential append creates."""
    return encode_block([WitnessEntry.build(seq=1, prev_hash=GENESIS, **entry_fields(0, 0))])


async def write_chain(bus: EventBus, count: int, *, start: int = 1, prev: str = GENESIS,
                      inflight: int = CHAIN_INFLIGHT, progress: Progress | None = None,
                      phase: str = "populate") -> str:
    """Write entries ``start`` .. ``start+count-1`` of a valid chain after
    hash ``prev``, one entry per block (the layout many sequential writers
    leave: the most blocks per entry, the worst case for verify), built here
    and created with ``inflight`` creates in flight; the hash of the last.

    The creates are started in order and each sends its request before the
    next starts, so on NATS the stream holds them in chain order (a scan
    there follows the stream)."""
    sem = asyncio.Semaphore(inflight)
    tasks: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []
    step = max(1, count // 100)

    async def create(key: str, data: bytes) -> None:
        try:
            if await bus.create(key, data) is None:
                raise BenchError(f"{key} of a fresh chain already exists")
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            sem.release()

    try:
        for n, seq in enumerate(range(start, start + count)):
            e = WitnessEntry.build(seq=seq, prev_hash=prev, **entry_fields(0, seq))
            prev = e.hash
            await sem.acquire()
            if failed:
                raise failed[0]
            task = asyncio.create_task(create(entry_key(seq), encode_block([e])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if progress is not None and (n % step == 0 or n == count - 1):
                progress(phase, n + 1, count)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return prev


# -- measuring -----------------------------------------------------------------


async def _measure(op: Callable[[int], Awaitable[None]], spec: dict[str, Any],
                   ready: Callable[[], None], go: Awaitable[bytes],
                   counts: Callable[[], dict[str, int]] | None = None) -> dict[str, Any]:
    """``warmup`` ops, ready, wait for go, then ``n`` timed ops with
    ``inflight`` in flight: the window, CPU time and each op's latency."""
    n, warmup, inflight = spec["n"], spec["warmup"], spec["inflight"]
    if warmup:
        await run_concurrently(op, 0, warmup, inflight)
    latency: list[int] = []

    async def timed(i: int) -> None:
        t0 = time.perf_counter_ns()
        await op(i)
        latency.append(time.perf_counter_ns() - t0)

    gc.collect()
    ready()
    if (await go).strip() != b"go":
        raise BenchError("stopped before the start signal")
    before = counts() if counts is not None else {}
    t0 = time.monotonic_ns()
    _, cpu = await run_concurrently(timed, warmup, n, inflight)
    t1 = time.monotonic_ns()
    out: dict[str, Any] = {"ops": n, "t0_ns": t0, "t1_ns": t1, "cpu_s": cpu, "latency_ns": latency}
    if counts is not None:
        after = counts()
        out.update({k: after[k] - before.get(k, 0) for k in after})
    return out


async def _append(spec: dict[str, Any], ready: Callable[[], None],
                  go: Awaitable[bytes]) -> dict[str, Any]:
    writer = spec["writer"]
    async with connect(spec["url"]) as bus:
        counts = {"creates": 0, "lost_creates": 0}
        create = bus.create

        async def counted(key: str, value: str | bytes) -> int | None:
            revision = await create(key, value)
            if key.startswith(ENTRIES):
                counts["creates"] += 1
                counts["lost_creates"] += revision is None
            return revision

        bus.create = counted  # type: ignore[method-assign]  # count the blocks the witness creates
        witness = Witness(bus, checkpoint_every=None)

        async def append(i: int) -> None:
            f = entry_fields(writer, i)
            await witness.append(f["component"], f["operation"], f["params"], actor=f["actor"],
                                 trace_id=f["trace_id"])

        return await _measure(append, spec, ready, go, lambda: dict(counts))


async def _raw(spec: dict[str, Any], ready: Callable[[], None],
               go: Awaitable[bytes]) -> dict[str, Any]:
    from infrafabric.bench.bus import connect_raw

    driver, close = await connect_raw(spec["raw"], spec["op_timeout"])
    kind, value = spec["kind"], block_bytes()

    async def create(i: int) -> None:
        if await driver.create(kind, i, value) is None:
            raise BenchError(f"raw create of the fresh key {driver.key(kind, i)!r} lost")

    try:
        return await _measure(create, spec, ready, go)
    finally:
        with contextlib.suppress(Exception):
            await close()


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from ``/proc/self/status`` (Linux), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MB. On Linux this is NOT this
    process's own peak: exec records the peak RSS of the memory it replaces
    (the parent's, for a child started with vfork or fork) and reports the
    larger, so a child of a big parent reports at least the parent's peak."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _reset_peak_rss() -> bool:
    """Start this process's peak RSS (``VmHWM``) over from its current RSS
    (Linux: ``clear_refs`` 5), so it covers what follows only; False if not
    possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


async def _verify(spec: dict[str, Any], ready: Callable[[], None],
                  go: Awaitable[bytes]) -> dict[str, Any]:
    async with connect(spec["url"]) as bus:
        if spec.get("populate"):
            await write_chain(bus, spec["populate"])
        gc.collect()
        reset = _reset_peak_rss()
        before = _status_mb("VmRSS")
        ready()
        if (await go).strip() != b"go":
            raise BenchError("stopped before the start signal")
        c0, t0 = time.process_time(), time.perf_counter()
        report = await Witness(bus).verify()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        own_peak = _status_mb("VmHWM")
        return {"seconds": seconds, "cpu_s": cpu, "ok": report.ok, "entries": report.entries,
                "problem": report.problem, "rss_before_mb": before,
                "peak_rss_mb": own_peak if own_peak is not None else _ru_maxrss_mb(),
                "peak_source": "VmHWM" if own_peak is not None else "ru_maxrss",
                "ru_maxrss_mb": _ru_maxrss_mb(), "rss_after_mb": _status_mb("VmRSS"),
                "peak_reset": reset, "pid": os.getpid()}


_ROLES = {"append": _append, "raw": _raw, "verify": _verify}


async def run_role(spec: dict[str, Any], ready: Callable[[], None],
                   go: Awaitable[bytes]) -> dict[str, Any]:
    """Run ``spec["role"]``: call ``ready()`` when set up, start when ``go``
    yields ``b"go"``; the result."""
    return await _ROLES[spec["role"]](spec, ready, go)


def _say_ready() -> None:
    os.write(1, b"ready\n")


async def _main(spec: dict[str, Any]) -> None:
    go = stdin_signal(asyncio.get_running_loop())
    result = await run_role(spec, _say_ready, go)
    os.write(1, json.dumps(result).encode() + b"\n")


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(argv[0]) if len(argv) == 1 else None
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or spec.get("role") not in _ROLES:
        print("usage: python -m infrafabric.bench._witness_worker "
              '\'{"role": "append|raw|verify", ...}\'', file=sys.stderr)
        return 2
    return run_worker(_main(spec))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
