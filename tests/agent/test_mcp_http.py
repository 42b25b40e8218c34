"""``ifctl mcp --http``: a real server process, the SDK's streamable HTTP
client, tokens issued and revoked with ``ifctl mcp token``. No token → 401,
an unknown or revoked one → 401, a token for swarm A acts only as A, and
the bus never holds a token."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from infrafabric.bus import connect
from infrafabric.fleet import assemble

pytestmark = [pytest.mark.engine, pytest.mark.timeout(120)]

IFCTL = str(Path(sys.executable).parent / "ifctl")
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "0"}}}


def ifctl(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run([IFCTL, *args, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def env(engine_url: str, tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
        "IF_BUS_URL": engine_url, "IF_HOME": str(tmp_path), "USER": "operator"}


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[str]:
    proc = subprocess.Popen([IFCTL, "mcp", "--http", "--port", "0"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    url = None
    for line in proc.stderr:
        found = re.search(r"serving agents at (\S+)", line)
        if found:
            url = found.group(1)
            break
    assert url is not None, "the server did not start"
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def agent(url: str, token: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Client(streamable_http_client(url, http_client=http))


async def call(c: Client, tool: str, **args: Any) -> tuple[bool, Any]:
    result = await c.call_tool(tool, args)
    text = result.content[0].text  # type: ignore[union-attr]
    return result.is_error, (text if result.is_error else json.loads(text))


async def test_tokens_bind_agents_to_their_swarm(engine_url: str, env: dict[str, str], served: str) -> None:
    async with connect(engine_url) as bus:
        fleet = assemble(bus, signer=None)
        await fleet.coordinator.create_tasks([{"id": "T1", "title": "one"}, {"id": "T2", "title": "two"}])
        await fleet.register_swarm("swarm-a", [])
        await fleet.register_swarm("swarm-b", [])
    token_a = ifctl(env, "mcp", "token", "issue", "swarm-a", "--name", "laptop-a")["token"]
    token_b = ifctl(env, "mcp", "token", "issue", "swarm-b", "--name", "laptop-b")["token"]

    async with httpx2.AsyncClient(timeout=30) as raw:
        headers = {"Accept": "application/json, text/event-stream"}
        assert (await raw.post(served, json=INIT, headers=headers)).status_code == 401
        bogus = {**headers, "Authorization": "Bearer ift_" + "x" * 43}
        assert (await raw.post(served, json=INIT, headers=bogus)).status_code == 401

    async with agent(served, token_a) as a, agent(served, token_b) as b:
        error, got_a = await call(a, "task_next", wait_s=0)
        assert not error and got_a["task"]["id"] == "T1"
        error, got_b = await call(b, "task_next", wait_s=0)
        assert not error and got_b["task"]["id"] == "T2"
        # A cannot act on B's task: the token says who it is, and no tool takes a swarm id
        error, text = await call(a, "task_complete", task_id="T2", summary="not mine")
        assert error and "swarm-a does not hold the claim" in text
        error, text = await call(a, "task_complete", task_id="T1", summary="mine")
        assert not error
        error, budget = await call(b, "budget_status")
        assert budget["swarm_id"] == "swarm-b"
        # an agent over HTTP is live while its requests arrive (swarm-a holds nothing now)
        error, board = await call(a, "board_status")
        assert not error and {"swarm-a", "swarm-b"} <= set(board["live_swarms"])
        async with connect(engine_url) as bus:
            seen = (await assemble(bus, signer=None).coordinator.liveness())["swarm-a"]
        assert seen.live and seen.because[0].startswith("connected via mcp-http")

    ifctl(env, "mcp", "token", "revoke", "laptop-b")
    async with httpx2.AsyncClient(timeout=30) as raw:
        revoked = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token_b}"}
        assert (await raw.post(served, json=INIT, headers=revoked)).status_code == 401

    async with connect(engine_url) as bus:
        stored = b"".join(e.value for e in await bus.list(""))
        fleet = assemble(bus, signer=None)
        ops = [(e.operation, e.actor) async for e in fleet.witness.entries()]
        t1 = await fleet.coordinator.get_task("T1")
    assert token_a.encode() not in stored and token_b.encode() not in stored
    assert ("agent_token_issued", "operator") in ops and ("agent_token_revoked", "operator") in ops
    assert t1.history[-1].by == "swarm-a"
    listed = ifctl(env, "mcp", "token", "list")["tokens"]
    assert {(t["name"], t["swarm_id"], t["revoked"]) for t in listed} == {
        ("laptop-a", "swarm-a", False), ("laptop-b", "swarm-b", True)}


def test_http_beyond_loopback_needs_a_flag_and_swarm_flags_do_not_apply(env: dict[str, str]) -> None:
    for args, says in ((["--host", "0.0.0.0"], "clear text"), (["--swarm", "a"], "--swarm and --cap")):
        done = subprocess.run([IFCTL, "mcp", "--http", "--port", "0", *args], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([IFCTL, "mcp", "token", "issue", "ghost"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "not registered" in done.stderr


def test_a_token_name_is_taken_once_and_revoking_twice_changes_nothing(engine_url: str,
                                                                      env: dict[str, str]) -> None:
    ifctl(env, "swarm", "register", "swarm-c")
    ifctl(env, "mcp", "token", "issue", "swarm-c", "--name", "ci")
    again = subprocess.run([IFCTL, "mcp", "token", "issue", "swarm-c", "--name", "ci"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "exists already" in again.stderr
    assert ifctl(env, "mcp", "token", "revoke", "ci")["already"] is False
    assert ifctl(env, "mcp", "token", "revoke", "ci")["already"] is True
    query = subprocess.run([IFCTL, "witness", "query", "--operation", "agent_token_revoked", "--json"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert len([line for line in query.stdout.splitlines() if '"agent_token_revoked"' in line]) == 1


def test_it_answers_only_to_the_names_it_is_given(env: dict[str, str]) -> None:
    ifctl(env, "swarm", "register", "swarm-d")
    token = ifctl(env, "mcp", "token", "issue", "swarm-d")["token"]
    proc = subprocess.Popen([IFCTL, "mcp", "--http", "--port", "0", "--allow-host", "agents.example"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        url = next(m.group(1) for line in proc.stderr if (m := re.search(r"serving agents at (\S+)", line)))
        port = url.split(":")[2].split("/")[0]
        headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"}
        with httpx2.Client(timeout=30) as raw:
            evil = raw.post(url, json=INIT, headers={**headers, "Host": f"evil.example:{port}"})
            named = raw.post(url, json=INIT, headers={**headers, "Host": f"agents.example:{port}"})
            anonymous = raw.post(url, json=INIT, headers={"Accept": headers["Accept"],
                                                          "Host": f"evil.example:{port}"})
        assert evil.status_code in (400, 421), evil.text  # DNS rebinding: another name is refused
        assert named.status_code == 200, named.text
        assert anonymous.status_code == 401  # and nothing is served without a token, whatever the name
    finally:
        proc.terminate()
        proc.wait(timeout=30)
