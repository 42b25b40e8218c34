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

The guards are timed the same way, in a real git repository, with every
task declaring paths and ``--leases`` of them held by another swarm:
``ifctl guard tool`` (the PreToolUse hook before every edit) for an edit it
refuses (another claim's path) and one it allows (the agent's own), and
``ifctl guard pre-commit`` (git's hook, once per commit; a full command).

Targets: a hook, and the tool guard, through the agent's server within
100 ms at p95 (the bound for a hook before or after every tool call); the
pre-commit guard within 1 s at p95. Reported, never asserted.
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

__all__ = ["PRE_COMMIT_TARGET_MS", "TARGET_MS", "bench_hooks"]

TARGET_MS = 100.0
PRE_COMMIT_TARGET_MS = 1000.0
#: path leases held by another swarm while the guards are timed
OTHER = "bench-other"
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


def _sample_hooks(env: dict[str, str], n: int, repo: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for event, payload in PAYLOADS.items():
        body = json.dumps(payload).encode()
        samples = [_time_process([_ifctl(), "hook", "claude", event], env, body) for _ in range(n + 2)][2:]
        out[event] = summarize(samples)
    for name, path, refused in (("guard-refuse", "src/m1/x.py", True),
                                ("guard-allow", "src/m0/x.py", False)):
        body = json.dumps({"session_id": "bench", "cwd": str(repo), "hook_event_name": "PreToolUse",
                           "tool_name": "Edit", "tool_input": {"file_path": str(repo / path)}}).encode()
        samples = [_time_guard(env, body, repo, refused) for _ in range(n + 2)][2:]
        out[name] = summarize(samples)
    return out


def _time_guard(env: dict[str, str], body: bytes, repo: Path, refused: bool) -> int:
    started = time.perf_counter_ns()
    done = subprocess.run([_ifctl(), "guard", "tool", "--agent", "claude"], input=body, env=env, cwd=repo,
                          capture_output=True, timeout=60)
    took = time.perf_counter_ns() - started
    if done.returncode != 0 or (b'"deny"' in done.stdout) != refused:
        raise RuntimeError(f"ifctl guard tool: exit {done.returncode}, {'no ' if refused else ''}refusal: "
                           f"{(done.stdout + done.stderr).decode()[-300:]}")
    return took


def _sample_pre_commit(env: dict[str, str], n: int, repo: Path) -> dict[str, Any]:
    (repo / "src" / "m0").mkdir(parents=True, exist_ok=True)
    (repo / "src" / "m0" / "x.py").write_text("x = 1\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        done = subprocess.run([_ifctl(), "guard", "pre-commit", "--swarm", SWARM], env=env, cwd=repo,
                              capture_output=True, timeout=60)
        samples.append(time.perf_counter_ns() - started)
        if done.returncode != 0:
            raise RuntimeError(f"ifctl guard pre-commit exited {done.returncode}: "
                               f"{done.stdout.decode()[-300:]}")
    return summarize(samples)


def _git_repo(where: Path) -> Path:
    repo = where / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["-c", "user.name=bench", "-c", "user.email=bench@localhost",
                                                  "commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


async def bench_hooks(url: str, *, sizes: tuple[int, ...] = (100, 2000), n: int = 30, leases: int = 50,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Time the hooks and guards at each board size, with ``leases`` path
    leases held by another swarm (see the module docs)."""
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
            await fleet.coordinator.create_tasks({"id": f"T{i}", "title": f"task {i}",
                                                  "paths": [f"src/m{i}/**"]} for i in range(size))
            await fleet.register_swarm(SWARM, [])
            await fleet.register_swarm(OTHER, [])
            claim = await fleet.coordinator.try_claim(SWARM, "T0", lease_ttl=3600)
            assert claim.won, claim.reason
            held = 0
            for i in range(1, min(leases, size - 1) + 1):
                held += (await fleet.coordinator.try_claim(OTHER, f"T{i}", lease_ttl=3600)).won
            beats = []
            for _ in range(n):
                started = time.perf_counter_ns()
                await fleet.coordinator.heartbeat(SWARM, "T0", claim.claim_id)
                beats.append(time.perf_counter_ns() - started)
            with tempfile.TemporaryDirectory(prefix="if-bench-hooks-") as home:
                env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
                    "IF_BUS_URL": ns_url, "IF_HOME": home, "IF_SWARM_ID": SWARM}
                repo = _git_repo(Path(home))
                server = await asyncio.to_thread(_start_server, env, Path(home))
                try:
                    if progress is not None:
                        progress(f"board of {size}", 1, 4)
                    via_server = await asyncio.to_thread(_sample_hooks, env, n, repo)
                finally:
                    _stop_server(server)
                if progress is not None:
                    progress(f"board of {size}", 2, 4)
                direct = await asyncio.to_thread(_sample_hooks, env, max(n // 3, 3), repo)
                pre_commit = await asyncio.to_thread(_sample_pre_commit, env, max(n // 3, 3), repo)
            if progress is not None:
                progress(f"board of {size}", 3, 4)
            await clean_namespace(bus, None)
        runs.append({"tasks": size, "leases_held": held + 1, "server": via_server, "direct": direct,
                     "pre_commit": pre_commit, "raw_heartbeat": summarize(beats)})
    largest_size, largest = runs[-1]["tasks"], via_server
    targets = [target_row(f"hook-{event}", f"`ifctl hook claude {event}` through the agent's server, p95 "
                          f"≤ {TARGET_MS:g} ms ({largest_size:,}-task board)", event, "server.p95",
                          TARGET_MS, largest[event]["p95"], applies=True)
               for event in PAYLOADS]
    last: dict[str, Any] = runs[-1]
    board = f"{largest_size:,}-task board, {last['leases_held']} path leases"
    for name, what in (("guard-refuse", "an edit it refuses"), ("guard-allow", "an edit it allows")):
        targets.append(target_row(name, f"`ifctl guard tool` ({what}) through the agent's server, p95 ≤ "
                                  f"{TARGET_MS:g} ms ({board})", name, "server.p95", TARGET_MS,
                                  largest[name]["p95"], applies=True))
    targets.append(target_row("guard-pre-commit", f"`ifctl guard pre-commit` (git's hook), p95 ≤ "
                              f"{PRE_COMMIT_TARGET_MS:g} ms ({board})", "pre-commit", "pre_commit.p95",
                              PRE_COMMIT_TARGET_MS, last["pre_commit"]["p95"], applies=True))
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
