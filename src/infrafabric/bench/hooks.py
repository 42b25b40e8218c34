"""``ifctl bench hooks``: what an agent's lifecycle hook costs, as its client runs it.

A client (Claude Code, Codex, Cursor) runs ``ifctl hook AGENT EVENT`` as a new
process after every tool use and at every stop, so what is timed is that:
the wall time of the whole process, fed the client's payload on stdin, from
spawn to exit. For each board size (``--tasks``), in a fresh namespace with
one task claimed by the agent's swarm:

* **server**: the agent's ``ifctl mcp`` runs (the documented setup); the hook
  reaches it over its control socket, and it renews the claim (a heartbeat)
  or decides the stop (it holds a task: refused) on the bus;
* **direct**: no server runs (a client that starts one per call); the hook
  imports the library and acts on the bus itself;
* beside them, in the same run: ``heartbeat`` in-process (the bus work a
  post-tool-use hook does, raw), and ``python -c pass`` (the floor of any
  process a client starts).

Target: a hook through the agent's server within 100 ms at p95 (the
issue's bound for a hook after every tool call). Reported, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from infrafabric.agent.control import socket_path
from infrafabric.bench._common import (
    Progress,
    clean_namespace,
    machine_info,
    started_at,
    target_row,
    with_namespace,
)
from infrafabric.bench.stats import summarize
from infrafabric.bus import connect
from infrafabric.fleet import assemble

__all__ = ["TARGET_MS", "bench_hooks"]

TARGET_MS = 100.0
SWARM = "bench-agent"
PAYLOADS = {
    "post-tool-use": {"session_id": "bench", "transcript_path": "/dev/null", "cwd": "/", "hook_event_name":
                      "PostToolUse", "tool_name": "Write", "tool_input": {"file_path": "/x", "content": "x"},
                      "tool_response": {"success": True}, "tool_use_id": "toolu_bench"},
    "stop": {"session_id": "bench", "transcript_path": "/dev/null", "cwd": "/", "hook_event_name": "Stop",
             "stop_hook_active": False, "last_assistant_message": "done"},
}


def _ifctl() -> str:
    return str(Path(sys.executable).parent / "ifctl")


def _time_process(args: list[str], env: dict[str, str], stdin: bytes) -> int:
    started = time.perf_counter_ns()
    done = subprocess.run(args, input=stdin, env=env, capture_output=True, timeout=60)
    took = time.perf_counter_ns() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-300:]}")
    return took


def _sample_hooks(env: dict[str, str], n: int) -> dict[str, dict[str, Any]]:
    out = {}
    for event, payload in PAYLOADS.items():
        body = json.dumps(payload).encode()
        samples = [_time_process([_ifctl(), "hook", "claude", event], env, body) for _ in range(n + 2)][2:]
        out[event] = summarize(samples)
    return out


async def bench_hooks(url: str, *, sizes: tuple[int, ...] = (100, 2000), n: int = 30,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Time the hooks at each board size (see the module docs)."""
    t0 = time.time()
    floor = summarize([_time_process([sys.executable, "-c", "pass"], dict(os.environ), b"")
                       for _ in range(n)])
    runs = []
    for size in sizes:
        ns_url = with_namespace(url, f"benchhooks{uuid.uuid4().hex[:10]}")
        if progress is not None:
            progress(f"board of {size}", 0, 4)
        async with connect(ns_url) as bus:
            fleet = assemble(bus, signer=None)
            await fleet.coordinator.create_tasks({"id": f"T{i}", "title": f"task {i}"} for i in range(size))
            await fleet.register_swarm(SWARM, [])
            claim = await fleet.coordinator.try_claim(SWARM, "T0", lease_ttl=3600)
            assert claim.won, claim.reason
            beats = []
            for _ in range(n):
                started = time.perf_counter_ns()
                await fleet.coordinator.heartbeat(SWARM, "T0", claim.claim_id)
                beats.append(time.perf_counter_ns() - started)
            with tempfile.TemporaryDirectory(prefix="if-bench-hooks-") as home:
                env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
                    "IF_BUS_URL": ns_url, "IF_HOME": home, "IF_SWARM_ID": SWARM}
                server = await asyncio.to_thread(_start_server, env, Path(home))
                try:
                    if progress is not None:
                        progress(f"board of {size}", 1, 4)
                    via_server = await asyncio.to_thread(_sample_hooks, env, n)
                finally:
                    _stop_server(server)
                if progress is not None:
                    progress(f"board of {size}", 2, 4)
                direct = await asyncio.to_thread(_sample_hooks, env, max(n // 3, 3))
            if progress is not None:
                progress(f"board of {size}", 3, 4)
            await clean_namespace(bus, None)
        runs.append({"tasks": size, "server": via_server, "direct": direct,
                     "raw_heartbeat": summarize(beats)})
    largest_size, largest = runs[-1]["tasks"], via_server
    targets = [target_row(f"hook-{event}", f"`ifctl hook claude {event}` through the agent's server, p95 "
                          f"≤ {TARGET_MS:g} ms ({largest_size:,}-task board)", event, "server.p95",
                          TARGET_MS, largest[event]["p95"], applies=True)
               for event in PAYLOADS]
    return {"benchmark": "hooks", "started_at": started_at(t0), "duration_s": round(time.time() - t0, 1),
            "machine": machine_info(), "n": n, "process_floor": floor, "runs": runs, "targets": targets}


def _start_server(env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([_ifctl(), "mcp", "--swarm", SWARM, "--lease", "3600"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sock = socket_path(SWARM, home)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_server(proc)
            raise RuntimeError("ifctl mcp did not start: "
                               + (proc.stderr.read().decode()[-300:] if proc.stderr else ""))
        time.sleep(0.05)
    return proc


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
