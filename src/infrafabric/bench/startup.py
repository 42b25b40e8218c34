"""``ifctl bench startup``: what an ``ifctl`` process costs before it does anything.

An agent's client runs ``ifctl hook ...`` after every tool call, and a shell
loop runs ``ifctl task heartbeat`` every few minutes: each is a new process,
so its start-up (the interpreter, the imports, parsing the command line) is
paid every time. This times the whole process, spawn to exit, as
``subprocess.run`` sees it, for:

* ``python -c pass``: the floor of any Python process on this machine;
* ``ifctl --help``: the command line alone (no group is imported);
* ``ifctl task heartbeat``: a real heartbeat on a claim of a fresh
  namespace on the bus, three ways:

  - with no agent server, as set up by default: the first call acts itself
    and leaves the command line's persisted connection behind
    (:mod:`infrafabric.agent.persist`), timed once; the next ones go through
    it without loading the library;
  - with the agent's ``ifctl mcp`` running (the documented agent setup: it
    answers over its control socket);
  - with ``IF_PERSIST=0``: every call loads the library and acts on the bus
    itself. Its **start-up** is its wall time less the same work done in a
    warm process (connect to the bus, assemble the fleet, heartbeat, close),
    timed beside it in the same run;
* ``ifctl hook claude post-tool-use`` and ``... stop``, through the agent's
  running ``ifctl mcp`` (the documented setup): the hooks' whole cost.

Targets (p50): ``--help``, the heartbeat with no agent server (through the
persisted connection), the heartbeat through the agent's server, and each
hook at most 150 ms. Reported, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from infrafabric.agent.control import PERSIST_ENV, persist_socket
from infrafabric.bench._common import (
    Progress,
    clean_namespace,
    machine_info,
    started_at,
    target_row,
    with_namespace,
)
from infrafabric.bench.hooks import PAYLOADS, SWARM, _ifctl, _start_server, _stop_server, _time_process
from infrafabric.bench.stats import summarize
from infrafabric.bus import connect
from infrafabric.fleet import assemble

__all__ = ["TARGET_MS", "bench_startup"]

TARGET_MS = 150.0


def _sample(args: list[str], env: dict[str, str], n: int, stdin: bytes = b"") -> dict[str, Any]:
    """``n`` runs of the process (after one that warms the caches), summarized."""
    _time_process(args, env, stdin)  # the first run fills the OS's page cache and Python's bytecode cache
    return summarize([_time_process(args, env, stdin) for _ in range(n)])


async def _warm_heartbeats(url: str, task_id: str, claim_id: str, n: int) -> dict[str, Any]:
    """The heartbeat command's work in a warm process: connect, assemble the
    fleet (as every command does), renew, close."""
    samples = []
    for _ in range(n + 1):
        started = time.perf_counter_ns()
        async with connect(url) as bus:
            await assemble(bus, signer=None).coordinator.heartbeat(SWARM, task_id, claim_id)
        samples.append(time.perf_counter_ns() - started)
    return summarize(samples[1:])


async def bench_startup(url: str, *, n: int = 20, progress: Progress | None = None) -> dict[str, Any]:
    """Time each command's process (see the module docs) on the bus at ``url``."""
    t0 = time.time()
    ns_url = with_namespace(url, f"benchstart{uuid.uuid4().hex[:10]}")
    ops: dict[str, dict[str, Any]] = {}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")}
    with tempfile.TemporaryDirectory(prefix="if-bench-startup-") as home:
        env = base_env | {"IF_BUS_URL": ns_url, "IF_HOME": home, "IF_SWARM_ID": SWARM}
        steps = 6
        if progress is not None:
            progress("python -c pass", 0, steps)
        ops["python"] = await asyncio.to_thread(_sample, [sys.executable, "-c", "pass"], env, n)
        if progress is not None:
            progress("ifctl --help", 1, steps)
        ops["help"] = await asyncio.to_thread(_sample, [_ifctl(), "--help"], env, n)
        async with connect(ns_url) as bus:
            fleet = assemble(bus, signer=None)
            await fleet.coordinator.create_tasks([{"id": "T0", "title": "the task a heartbeat renews"}])
            await fleet.register_swarm(SWARM, [])
            claim = await fleet.coordinator.try_claim(SWARM, "T0", lease_ttl=3600)
            assert claim.won and claim.claim_id, claim.reason
            beat = [_ifctl(), "task", "heartbeat", "T0", "--swarm", SWARM, "--claim", claim.claim_id]
            if progress is not None:
                progress("ifctl task heartbeat, IF_PERSIST=0", 2, steps)
            ops["heartbeat_library"] = await asyncio.to_thread(_sample, beat, env | {PERSIST_ENV: "0"}, n)
            if progress is not None:
                progress("heartbeat in a warm process", 3, steps)
            ops["heartbeat_warm"] = await _warm_heartbeats(ns_url, "T0", claim.claim_id, n)
            if progress is not None:
                progress("ifctl task heartbeat through the persisted connection", 4, steps)
            ops["heartbeat_first"], ops["heartbeat"] = await asyncio.to_thread(_persisted, beat, env, n)
            if progress is not None:
                progress("hooks through the agent's server", 5, steps)
            server = await asyncio.to_thread(_start_server, env, Path(home))
            try:
                ops["heartbeat_server"] = await asyncio.to_thread(_sample, beat, env, n)
                for event, payload in PAYLOADS.items():
                    ops[f"hook_{event}"] = await asyncio.to_thread(
                        _sample, [_ifctl(), "hook", "claude", event], env, n, json.dumps(payload).encode())
            finally:
                await asyncio.to_thread(_stop_server, server)
            await clean_namespace(bus, None)
    startup = {stat: round(ops["heartbeat_library"][stat] - ops["heartbeat_warm"][stat], 3)
               for stat in ("p50", "p95")}
    targets = [
        target_row("help", f"`ifctl --help`, p50 ≤ {TARGET_MS:g} ms", "help", "p50", TARGET_MS,
                   ops["help"]["p50"], applies=True),
        target_row("heartbeat", "`ifctl task heartbeat` with no agent server, as set up by default "
                   "(through the connection the first one left), the whole process, p50 ≤ "
                   f"{TARGET_MS:g} ms", "heartbeat", "p50", TARGET_MS, ops["heartbeat"]["p50"], applies=True),
        target_row("heartbeat-server", "`ifctl task heartbeat` with the agent's `ifctl mcp` running (it "
                   f"answers), the whole process, p50 ≤ {TARGET_MS:g} ms", "heartbeat_server", "p50",
                   TARGET_MS, ops["heartbeat_server"]["p50"], applies=True),
        *(target_row(f"hook-{event}", f"`ifctl hook claude {event}` through the agent's server, p50 ≤ "
                     f"{TARGET_MS:g} ms", f"hook_{event}", "p50", TARGET_MS, ops[f"hook_{event}"]["p50"],
                     applies=True) for event in PAYLOADS),
    ]
    return {"benchmark": "startup", "started_at": started_at(t0), "duration_s": round(time.time() - t0, 1),
            "machine": machine_info(), "n": n, "operations": ops, "heartbeat_startup": startup,
            "targets": targets}


def _persisted(beat: list[str], env: dict[str, str], n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first heartbeat with the default settings and no agent server (it
    acts itself and leaves the persisted connection behind), then ``n``
    through that connection; the connection is closed after."""
    first = summarize([_time_process(beat, env, b"")])
    sock = persist_socket(env["IF_HOME"], env)
    if sock is None:
        raise RuntimeError("the persisted connection is turned off in this environment")
    deadline = time.monotonic() + 60
    while not sock.exists():  # it loads and connects on its own, after the first one exited
        if time.monotonic() > deadline:
            raise RuntimeError(f"the first heartbeat left no persisted connection at {sock}")
        time.sleep(0.05)
    try:
        return first, _sample(beat, env, n)
    finally:
        sock.unlink(missing_ok=True)  # it exits when its socket goes
