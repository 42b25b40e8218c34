"""``ifctl hook AGENT EVENT`` as each client runs it: real processes fed the
payloads the clients document (tests/agent/payloads/), on real NATS and
etcd, through the agent's running ``ifctl mcp`` (its control socket) and
without one (straight to the bus). What a hook answers is what the client
acts on: injected context, a refused stop, a handed-over task."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from infrafabric.agent.control import socket_path
from infrafabric.bus import connect
from infrafabric.coordinator import TaskStatus
from infrafabric.fleet import Fleet, assemble
from support import ifctl_modules, top_modules

pytestmark = [pytest.mark.engine, pytest.mark.timeout(120)]

IFCTL = str(Path(sys.executable).parent / "ifctl")
PAYLOADS = {agent: json.loads((Path(__file__).parent / "payloads" / f"{agent}.json").read_text())
            for agent in ("claude", "codex", "cursor")}


def hook(agent: str, event: str, env: dict[str, str], payload: Any = None, *,
         raw: bytes | None = None) -> subprocess.CompletedProcess[str]:
    body = raw if raw is not None else json.dumps(
        PAYLOADS[agent][event] if payload is None else payload).encode()
    full = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | env
    return subprocess.run([IFCTL, "hook", agent, event], input=body.decode(errors="replace"), env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
async def fleet(engine_url: str) -> AsyncIterator[Fleet]:
    async with connect(engine_url) as bus:
        f = assemble(bus, signer=None)
        await f.coordinator.create_tasks([
            {"id": "T1", "title": "first", "description": "do the first thing",
             "acceptance_criteria": ["it works"], "capabilities": ["code:python"]},
            {"id": "T2", "title": "second", "capabilities": ["code:python"]},
        ])
        await f.register_swarm("agent-1", ["code:python"])
        yield f


@pytest.fixture
def env(engine_url: str, tmp_path: Path) -> dict[str, str]:
    return {"IF_BUS_URL": engine_url, "IF_HOME": str(tmp_path), "IF_SWARM_ID": "agent-1"}


@pytest.fixture(params=["server", "direct"])
async def via(request: pytest.FixtureRequest, env: dict[str, str]) -> AsyncIterator[str]:
    """Hooks reach the agent's running `ifctl mcp` ("server"), or the bus when none runs ("direct")."""
    if request.param == "direct":
        yield "direct"
        return
    full = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | env
    # the agent's client: it holds the server's stdin open for as long as the session lasts
    proc = subprocess.Popen([IFCTL, "mcp", "--lease", "600"], env=full, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sock = socket_path("agent-1", env["IF_HOME"])
    try:
        for _ in range(300):
            if sock.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert sock.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no socket"
        yield "server"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the client hangs up: the server ends and removes its socket
        assert proc.wait(timeout=30) == 0
        assert not sock.exists()


# each client's format through the server; the direct path for two of them (it runs the same session code)
@pytest.mark.parametrize(("agent", "via"), [("claude", "server"), ("claude", "direct"), ("codex", "server"),
                                            ("cursor", "server"), ("cursor", "direct")], indirect=["via"])
async def test_hooks_renew_refuse_a_stop_and_hand_over_work(fleet: Fleet, env: dict[str, str], via: str,
                                                            agent: str) -> None:
    coord = fleet.coordinator
    outcome = await coord.next_task("agent-1", lease_ttl=30)
    assert outcome is not None and outcome.task_id == "T1"
    before = (await coord.get_task("T1")).lease_until

    started = hook(agent, "session-start", env)
    assert started.returncode == 0, started.stderr
    context = json.loads(started.stdout)
    text = (context["additional_context"] if agent == "cursor"
            else context["hookSpecificOutput"]["additionalContext"])
    assert "task_next" in text and "You hold task T1 (first)" in text

    renewed = hook(agent, "post-tool-use", env)
    assert renewed.returncode == 0, renewed.stderr
    assert renewed.stdout in ("", "{}")  # nothing to tell the agent
    after = (await coord.get_task("T1")).lease_until
    assert before is not None and after is not None and after > before  # real activity renewed the lease

    stop = hook(agent, "stop", env)
    assert stop.returncode == 0, stop.stderr
    answer = json.loads(stop.stdout)
    reason = answer["followup_message"] if agent == "cursor" else answer["reason"]
    if agent != "cursor":
        assert answer["decision"] == "block"
    assert "You still hold T1 (first)" in reason and "task_complete" in reason

    await coord.complete_task("agent-1", "T1", "done")
    handed = hook(agent, "stop", env)  # idle, and the board has work: it gets the next task
    answer = json.loads(handed.stdout)
    reason = answer["followup_message"] if agent == "cursor" else answer["reason"]
    assert "you now hold task T2 (second)" in reason
    t2 = await coord.get_task("T2")
    assert t2.status is TaskStatus.CLAIMED and t2.owner == "agent-1"

    await coord.complete_task("agent-1", "T2", "done")
    free = hook(agent, "stop", env)  # nothing held, nothing to do: it may stop
    assert free.returncode == 0
    assert free.stdout == ("" if agent == "claude" else "{}")


async def test_a_lost_claim_is_told_at_once(fleet: Fleet, env: dict[str, str], via: str) -> None:
    coord = fleet.coordinator
    outcome = await coord.next_task("agent-1", lease_ttl=0.5)
    assert outcome is not None
    hook("claude", "session-start", env)  # the session learns what it holds
    await fleet.register_swarm("agent-2", ["code:python"])
    await asyncio.sleep(0.8)
    taken = await coord.try_claim("agent-2", "T1")
    assert taken.won
    told = hook("claude", "post-tool-use", env)
    assert told.returncode == 0
    if via == "server":  # the server remembers the claim it saw; a fresh process sees only what it holds now
        text = json.loads(told.stdout)["hookSpecificOutput"]["additionalContext"]
        assert "You no longer hold task T1" in text
    assert (await coord.get_task("T1")).owner == "agent-2"


async def test_teammate_idle_answers_by_exit_code(fleet: Fleet, env: dict[str, str]) -> None:
    await fleet.coordinator.next_task("agent-1")
    held = hook("claude", "teammate-idle", env)
    assert held.returncode == 2 and "You still hold T1" in held.stderr


async def test_hooks_fail_open_and_stay_quiet_where_they_must(fleet: Fleet, env: dict[str, str]) -> None:
    await fleet.coordinator.next_task("agent-1")
    # Cursor also runs Claude Code's hooks: the claude handler must not act on a Cursor payload
    foreign = hook("claude", "stop", env, {**PAYLOADS["cursor"]["stop"], "hook_event_name": "Stop"})
    assert (foreign.returncode, foreign.stdout) == (0, "")
    # a session that is not a fleet agent (no IF_SWARM_ID) is let through untouched
    outsider = hook("claude", "stop", {k: v for k, v in env.items() if k != "IF_SWARM_ID"})
    assert (outsider.returncode, outsider.stdout) == (0, "")
    # the bus is away: the agent goes on, and stderr says why; no server is started
    away = hook("codex", "stop", {**env, "IF_BUS_URL": "nats://127.0.0.1:9"})
    assert away.returncode == 0 and away.stdout == "{}" and "did not answer" in away.stderr
    no_home = {k: v for k, v in env.items() if k != "IF_BUS_URL"}
    quiet = hook("claude", "post-tool-use", no_home)
    assert quiet.returncode == 0 and "not running" in quiet.stderr
    assert not (Path(env["IF_HOME"]) / "coordinator.json").exists()


@pytest.mark.parametrize(("args", "raw", "named", "code"), [
    # a stop hook's bad input exits 1: every client reads exit 2 from a stop hook as "do not stop"
    (("claude", "stop"), b"{not json", "stdin: not the JSON", 1),
    (("codex", "stop"), b"[1, 2]", "JSON object, not list", 1),
    (("claude", "teammate-idle"), json.dumps({"hook_event_name": "Stop"}).encode(), "hook_event_name", 1),
    (("claude", "post-tool-use"), b"{not json", "stdin: not the JSON", 2),
    (("cursor", "post-tool-use"), json.dumps({"hook_event_name": "stop"}).encode(), "hook_event_name", 2),
    (("claude", "after-file-edit"), b"{}", "claude has no 'after-file-edit' hook", 2),
    (("gemini", "stop"), b"{}", "agent 'gemini' is not one of", 1),
    (("claude",), b"{}", "expected AGENT EVENT", 2),
    (("claude", "session-start", "--swarm", "../../etc"), b"{}", "is not an id", 2),
])
def test_bad_hook_input_is_named_and_never_keeps_an_agent_from_stopping(
        env: dict[str, str], args: tuple[str, ...], raw: bytes, named: str, code: int) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | env
    done = subprocess.run([IFCTL, "hook", *args], input=raw, env=full, capture_output=True, timeout=60)
    assert done.returncode == code
    assert named in done.stderr.decode() and b"Traceback" not in done.stderr


def test_the_hooks_id_pattern_is_the_coordinators() -> None:
    from infrafabric.agent.hooks import SWARM_ID_PATTERN
    from infrafabric.coordinator.models import TASK_ID_PATTERN

    assert SWARM_ID_PATTERN == TASK_ID_PATTERN


async def test_no_stop_hook_loops_for_ever(fleet: Fleet, env: dict[str, str], via: str) -> None:
    coord = fleet.coordinator
    first = json.loads(hook("claude", "stop", env).stdout)  # idle, work on the board: T1 is handed over
    assert "you now hold task T1" in first["reason"]
    # the agent stops again without touching it: it is let go, and T1 goes back to the fleet at once
    again = hook("claude", "stop", env, {**PAYLOADS["claude"]["stop"], "stop_hook_active": True})
    assert again.returncode == 0 and again.stdout == "" and "untouched" in again.stderr
    assert (await coord.get_task("T1")).status is TaskStatus.AVAILABLE
    # a task the agent works on (a tool use renewed it) still holds it on a repeated stop
    outcome = await coord.next_task("agent-1")
    assert outcome is not None
    hook("claude", "post-tool-use", env)
    held = hook("codex", "stop", env, {**PAYLOADS["codex"]["stop"], "stop_hook_active": True})
    assert json.loads(held.stdout)["decision"] == "block"
    # a Cursor stop the user aborted is allowed, and nothing is handed over
    await coord.complete_task("agent-1", outcome.task_id, "done")
    aborted = hook("cursor", "stop", env, {**PAYLOADS["cursor"]["stop"], "status": "aborted"})
    assert (aborted.returncode, aborted.stdout) == (0, "{}")
    assert all(t.owner != "agent-1" or t.status is not TaskStatus.CLAIMED for t in await coord.list_tasks())


async def test_the_newest_server_keeps_its_socket_and_a_dead_ones_is_passed_by(
        fleet: Fleet, env: dict[str, str], engine_url: str) -> None:
    long_id = "a" * 128  # longer than a socket address could hold as a name
    await fleet.register_swarm(long_id, ["code:python"])
    full = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | env | {"IF_SWARM_ID": long_id}
    sock = socket_path(long_id, env["IF_HOME"])

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([IFCTL, "mcp"], env=full, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        return proc

    older = start()
    for _ in range(300):
        if sock.exists():
            break
        await asyncio.sleep(0.05)
    first_inode = sock.stat().st_ino
    newer = start()
    for _ in range(300):
        assert sock.exists()  # the newer server renames its socket over the older one's: never a gap
        if sock.stat().st_ino != first_inode:
            break
        await asyncio.sleep(0.05)
    assert sock.stat().st_ino != first_inode
    assert older.stdin is not None and newer.stdin is not None
    older.stdin.close()
    assert older.wait(timeout=30) == 0
    assert sock.exists()  # the older server left the newer one's socket alone
    started = hook("claude", "session-start", full)
    assert "You are swarm " + long_id in json.loads(started.stdout)["hookSpecificOutput"]["additionalContext"]
    newer.kill()  # dies without removing its socket
    newer.wait(timeout=30)
    assert sock.exists()
    passed = hook("claude", "session-start", full)  # a dead server's socket: straight to the bus
    assert passed.returncode == 0 and "You are swarm" in passed.stdout


async def test_a_hook_finds_the_project_from_the_payload(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {"IF_SWARM_ID": "agent-1"}
    done = subprocess.run([IFCTL, "hook", "claude", "post-tool-use"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60,
                          input=json.dumps({**PAYLOADS["claude"]["post-tool-use"], "cwd": str(project)}))
    # no server runs and none is started: the message names the project's own state directory
    assert done.returncode == 0 and str(project / ".git" / "infrafabric") in done.stderr
    assert not (project / ".git" / "infrafabric" / "coordinator.json").exists()


@pytest.mark.parametrize("via", ["server"], indirect=True)
async def test_task_heartbeat_goes_through_the_agents_server(fleet: Fleet, env: dict[str, str], via: str,
                                                            engine_url: str) -> None:
    """With the swarm's `ifctl mcp` running, `ifctl task heartbeat` asks it over
    the control socket and loads no library (no pydantic, no bus client):
    the lease on the bus is renewed all the same, with the same output as the
    full command. A refusal, another bus, or a flag the fast path does not
    know goes to the full command, which reports in its own words."""
    claim = await fleet.coordinator.try_claim("agent-1", "T1", lease_ttl=60)
    assert claim.won and claim.claim_id
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | env
    args = ["task", "heartbeat", "T1", "--claim", claim.claim_id, "--lease", "900", "--json"]
    modules, out, _ = ifctl_modules(args, full_env)
    assert not top_modules(modules) & {"pydantic", "nats", "aetcd", "asyncio", "rich", "click"}
    answer = json.loads(out)
    task = await fleet.coordinator.get_task("T1")
    assert task is not None and task.lease_until == pytest.approx(answer["lease_until"])
    assert answer["lease_left_s"] == pytest.approx(900, abs=5)
    # four processes at once through the one server: each renews, none is refused
    beat = [IFCTL, "task", "heartbeat", "T1", "--claim", claim.claim_id, "--json"]
    racers = [subprocess.Popen(beat, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(4)]
    outputs = [p.communicate(timeout=60) for p in racers]
    assert [p.returncode for p in racers] == [0, 0, 0, 0], outputs
    assert all(json.loads(out)["lease_left_s"] > 800 for out, _err in outputs)
    # the full command (--why is not on the fast path) answers with the same fields
    modules, out, _ = ifctl_modules([*args, "--why"], full_env)
    assert "pydantic" in top_modules(modules)
    assert set(json.loads(out)) - {"why"} == set(answer)
    # a stale token: the server refuses, and the full command says why, exit 1
    _, _, err = ifctl_modules(["task", "heartbeat", "T1", "--claim", "0123456789abcdef"], full_env, code=1)
    assert "stale" in err or "does not hold" in err, err
    # a bad IF_PERSIST is refused (exit 2) whether or not a server could answer
    _, _, err = ifctl_modules(["task", "heartbeat", "T1", "--claim", claim.claim_id],
                              full_env | {"IF_PERSIST": "soon"}, code=2)
    assert "IF_PERSIST='soon'" in err, err
    # another bus than the server's: the server does not act on its own bus for it
    other = full_env | {"IF_BUS_URL": engine_url.replace("namespace=", "namespace=other")}
    _, _, err = ifctl_modules(["task", "heartbeat", "T1", "--claim", claim.claim_id], other, code=2)
    assert "no task 'T1'" in err, err
