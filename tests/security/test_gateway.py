"""Two "machines" on one host: a coordinator serving with ``--listen`` (its
own state directory), and agent machines (their own state directories)
that hold only what ``ifctl coordinator add-agent`` wrote. The whole claim
flow through ``ifctl`` and ``ifctl mcp``; every authorization refusal; a
client without credentials, with a wrong CA, and a revoked agent."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters

pytestmark = [pytest.mark.timeout(180)]

IFCTL = str(Path(sys.executable).parent / "ifctl")
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "0"}}}


def run(env: dict[str, str], *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([IFCTL, *args], env=env, capture_output=True, text=True, timeout=90)
    if code is not None:
        assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def as_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(run(env, *args, "--json").stdout)


def base_env(home: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
        "IF_HOME": str(home), "USER": "operator"}


def sourced(env_file: Path, home: Path) -> dict[str, str]:
    """The environment of a shell on the agent machine that sourced ``env_file``."""
    env = base_env(home)
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0]
    return env


class Fleet:
    def __init__(self, root: Path) -> None:
        self.server = base_env(root / "coordinator-machine")
        started = as_json(self.server, "coordinator", "start", "--listen", "127.0.0.1:0",
                          "--advertise", "127.0.0.1")
        self.gateway = started["gateway"]
        self.root = root

    def agent(self, name: str, swarm: str) -> dict[str, str]:
        out = self.root / f"{name}-files" / f"{name}.env"
        as_json(self.server, "coordinator", "add-agent", name, "--swarm", swarm, "--cap", "code:python",
                "--out", str(out))
        as_json(self.server, "governor", "register", swarm, "--cap", "code:python", "--budget", "5",
                "--cost-per-hour", "1")
        return sourced(out, self.root / f"{name}-machine")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("two-machines"))
    try:
        for i in range(1, 7):
            run(f.server, "task", "create", f"T{i}", "--title", f"task {i}", "--cap", "code:python")
        yield f
    finally:
        run(f.server, "coordinator", "stop", code=None)


@pytest.fixture(scope="module")
def alice(fleet: Fleet) -> dict[str, str]:
    return fleet.agent("alice", "swarm-a")


@pytest.fixture(scope="module")
def bob(fleet: Fleet) -> dict[str, str]:
    return fleet.agent("bob", "swarm-b")


def task(fleet: Fleet, task_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = as_json(fleet.server, "task", "show", task_id)
    return shown


def test_the_gateway_serves_tls_and_refuses_a_client_without_credentials(fleet: Fleet,
                                                                         alice: dict[str, str]) -> None:
    url = fleet.gateway["url"]
    assert url.startswith("https://127.0.0.1:") and fleet.gateway["ca"]
    status = as_json(fleet.server, "coordinator", "status")
    assert status["gateway"]["url"] == url
    assert status["url"].startswith("nats://127.0.0.1:")  # the bus itself stays on loopback
    context = ssl.create_default_context(cafile=fleet.gateway["ca"])
    headers = {"Accept": "application/json, text/event-stream"}
    with httpx2.Client(verify=context, timeout=30) as http:
        assert http.post(url, json=INIT, headers=headers).status_code == 401
        bogus = {**headers, "Authorization": "Bearer ift_" + "x" * 43}
        assert http.post(url, json=INIT, headers=bogus).status_code == 401
    with httpx2.Client(timeout=30) as http, pytest.raises(httpx2.TransportError):  # not in clear text either
        http.post(url.replace("https://", "http://"), json=INIT, headers=headers)
    # ifctl on an agent machine without its token: bad input, nothing sent
    no_token = {k: v for k, v in alice.items() if k != "IF_AGENT_TOKEN_FILE"}
    done = run(no_token, "task", "next", code=2)
    assert "no agent token" in done.stderr
    # with someone else's CA: the gateway is not trusted, the token is not sent
    other = Path(alice["IF_HOME"]).parent / "other-ca.pem"
    from infrafabric import pki

    other.write_bytes(pki.make_ca("someone else").cert)
    done = run(alice | {"IF_BUS_TLS_CA": str(other)}, "task", "next", code=3)
    assert "is not trusted" in done.stderr


def test_the_claim_flow_from_another_machine_through_ifctl(fleet: Fleet, alice: dict[str, str]) -> None:
    assert Path(alice["IF_HOME"]) != Path(fleet.server["IF_HOME"])
    claimed = as_json(alice, "task", "next", "--wait", "5")
    task_id, claim = claimed["task"]["id"], claimed["claim_id"]
    assert task(fleet, task_id)["owner"] == "swarm-a"
    run(alice, "task", "heartbeat", task_id, "--claim", claim)
    run(alice, "task", "complete", task_id, "--claim", claim, "--result", '{"pr": 7}')
    done = task(fleet, task_id)
    assert done["status"] == "completed" and done["owner"] == "swarm-a"
    # nothing of the fleet lives on the agent machine: its state directory holds no bus
    assert not (Path(alice["IF_HOME"]) / "coordinator.json").exists()


async def test_the_claim_flow_from_another_machine_through_ifctl_mcp(fleet: Fleet,
                                                                     bob: dict[str, str]) -> None:
    params = StdioServerParameters(command=IFCTL, args=["mcp"], env=bob)
    async with Client(params) as c:
        tools = (await c.list_tools()).tools
        names = {t.name for t in tools}
        assert {"task_next", "task_complete", "cost_track"} <= names
        # no tool can name another swarm, reset a breaker or write the witness chain
        assert not any("swarm" in json.dumps(t.input_schema).lower() for t in tools)
        assert not any(word in n for n in names for word in ("breaker", "witness", "register"))
        result = await c.call_tool("task_next", {"wait_s": 5})
        got = json.loads(result.content[0].text)  # type: ignore[union-attr]
        assert not result.is_error, got
        shown = task(fleet, got["task"]["id"])
        assert shown["owner"] == "swarm-b" and shown["status"] == "claimed"
        result = await c.call_tool("task_complete",
                                   {"task_id": got["task"]["id"], "claim_id": got["claim_id"]})
        assert not result.is_error
    assert task(fleet, got["task"]["id"])["status"] == "completed"


async def test_an_agents_credentials_act_only_as_its_own_swarm(fleet: Fleet, alice: dict[str, str],
                                                               bob: dict[str, str]) -> None:
    held = as_json(bob, "task", "next", "--wait", "5")
    theirs = held["task"]["id"]
    # claim, heartbeat, complete, fail or release as B: refused (the CLI names the mismatch) ...
    for args in (["task", "next", "--swarm", "swarm-b"], ["task", "heartbeat", theirs, "--swarm", "swarm-b"]):
        assert "acts as swarm-a, and only as it" in run(alice, *args, code=2).stderr
    # ... and the gateway acts as A whatever is asked: A holds no claim on B's task
    for args in (["task", "heartbeat", theirs], ["task", "complete", theirs], ["task", "release", theirs],
                 ["task", "fail", theirs, "--error", "x"]):
        assert "swarm-a does not hold" in run(alice, *args, code=1).stderr
    assert task(fleet, theirs)["owner"] == "swarm-b" and task(fleet, theirs)["status"] == "claimed"
    # register as B, debit B, reset a breaker, touch the witness chain: only with the bus, which A lacks
    for args in (["swarm", "register", "swarm-b", "--cap", "x:y"], ["cost", "track", "swarm-b", "op", "1.00"],
                 ["governor", "reset-circuit-breaker", "swarm-b"],
                 ["governor", "trip", "swarm-b", "--reason", "x"],
                 ["witness", "checkpoint"], ["task", "create", "X1", "--title", "x"],
                 ["task", "reopen", "T1"]):
        done = run(alice, *args, code=None)
        assert done.returncode == 2 and "is an agent gateway, not a bus" in done.stderr, (args, done.stderr)
    # a debit through the gateway lands on A, never on B
    async with Client(StdioServerParameters(command=IFCTL, args=["mcp"], env=alice)) as c:
        result = await c.call_tool("cost_track", {"operation": "probe", "amount_usd": "0.25"})
        assert not result.is_error, result.content
    budgets = {b["swarm_id"]: b for b in as_json(fleet.server, "cost", "budget")["swarms"]}
    assert budgets["swarm-b"]["budget"]["spent_micros"] == 0
    assert budgets["swarm-a"]["budget"]["spent_micros"] == 250_000


def test_exit_codes_through_the_gateway_are_those_of_the_bus(fleet: Fleet) -> None:
    erin = fleet.agent("erin", "swarm-e")
    assert "--worktree is not available through the agent gateway" in run(
        erin, "task", "next", "--worktree", str(fleet.root), code=2).stderr
    run(fleet.server, "governor", "trip", "swarm-e", "--reason", "looping", "--by", "ops")
    stopped = run(erin, "task", "next", code=4)  # stopped by its governor: waiting will not help
    assert "looping" in stopped.stdout + stopped.stderr


async def test_a_revoked_agent_is_refused(fleet: Fleet) -> None:
    carol = fleet.agent("carol", "swarm-c")
    as_json(carol, "task", "next", "--wait", "5")
    as_json(fleet.server, "coordinator", "revoke-agent", "carol")
    done = run(carol, "task", "next", code=3)
    assert "refused this agent's token" in done.stderr
    proxy = subprocess.run([IFCTL, "mcp"], env=carol, input="", capture_output=True, text=True, timeout=60)
    assert proxy.returncode == 3 and "refused this agent's token" in proxy.stderr


def test_bad_listen_and_add_agent_input(fleet: Fleet, tmp_path: Path) -> None:
    env = base_env(tmp_path / "elsewhere")
    for bad in ("nowhere", "::1:8766", "0.0.0.0:99999"):
        assert "expected HOST:PORT" in run(env, "coordinator", "start", "--listen", bad, code=2).stderr
    assert "go with --listen" in run(env, "coordinator", "start", "--advertise", "x", code=2).stderr
    # add-agent without a gateway in that state directory: exit 3, nothing written
    out = tmp_path / "x.env"
    assert "gateway is not running" in run(env, "coordinator", "add-agent", "x", "--swarm", "s",
                                           "--out", str(out), code=3).stderr
    assert not out.exists()
    # an existing file is never overwritten
    out.write_text("keep")
    assert "exists already" in run(fleet.server, "coordinator", "add-agent", "y", "--swarm", "swarm-a",
                                   "--out", str(out), code=2).stderr
    assert out.read_text() == "keep"


def hook(env: dict[str, str], event: str) -> subprocess.CompletedProcess[str]:
    payloads = json.loads((Path(__file__).parents[1] / "agent" / "payloads" / "claude.json").read_text())
    return subprocess.run([IFCTL, "hook", "claude", event], input=json.dumps(payloads[event]), env=env,
                          capture_output=True, text=True, timeout=60)


async def test_the_hooks_of_an_agent_machine_go_through_the_gateway(fleet: Fleet) -> None:
    dave = fleet.agent("dave", "swarm-d")
    async with Client(StdioServerParameters(command=IFCTL, args=["mcp"], env=dave)) as c:
        result = await c.call_tool("task_next", {"wait_s": 5})
        held = json.loads(result.content[0].text)["task"]["id"]  # type: ignore[union-attr]
        before = task(fleet, held)["lease_until"]
        # through the proxy's control socket
        renewed = hook(dave, "post-tool-use")
        assert renewed.returncode == 0, renewed.stderr
        assert task(fleet, held)["lease_until"] > before  # real activity renewed the lease
        stop = hook(dave, "stop")
        assert stop.returncode == 0 and json.loads(stop.stdout)["decision"] == "block", stop.stderr
        assert f"You still hold {held}" in json.loads(stop.stdout)["reason"]
        assert edit_allowed(dave, fleet.root)
    # with no ifctl mcp running, the hook asks the gateway itself
    stop = hook(dave, "stop")
    assert stop.returncode == 0 and json.loads(stop.stdout)["decision"] == "block", stop.stderr
    assert edit_allowed(dave, fleet.root)


def edit_allowed(env: dict[str, str], root: Path) -> bool:
    """The edit guard on an agent machine lets an edit through (it fails open: path leases
    are not checked through the gateway), rather than blocking every edit."""
    repo = root / "agent-repo"
    if not repo.exists():
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
    payload = {"session_id": "s", "transcript_path": None, "cwd": str(repo), "hook_event_name": "PreToolUse",
               "tool_name": "Edit", "tool_input": {"file_path": str(repo / "a.py"), "old_string": "a",
                                                   "new_string": "b"}}
    done = subprocess.run([IFCTL, "guard", "tool", "--agent", "claude"], input=json.dumps(payload), env=env,
                          cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return not done.stdout.strip() or "deny" not in done.stdout


def test_agents_racing_through_the_gateway_never_share_a_task(fleet: Fleet) -> None:
    from support import start_together

    for i in range(4):
        run(fleet.server, "task", "create", f"R{i}", "--title", f"race {i}", "--cap", "code:python")
    racers = [fleet.agent(f"racer-{i}", f"swarm-r{i}") for i in range(4)]
    racer = str(Path(__file__).with_name("gateway_racer.py"))
    # two processes per agent: two sessions of one swarm race too
    commands = [["env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable, racer]
                for env in racers for _ in range(2)]
    answers: list[tuple[str, dict[str, Any]]] = []
    for env, proc in zip([e for e in racers for _ in range(2)], start_together(commands), strict=True):
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        answers.append((env["IF_SWARM_ID"], json.loads(out.splitlines()[-1])))
    won: dict[str, str] = {}
    for swarm, answer in answers:
        assert answer["task"] is not None, answer  # more free tasks than swarms: each swarm gets one
        task_id = answer["task"]["id"]
        assert won.setdefault(task_id, swarm) == swarm, f"{task_id} handed to {won[task_id]} and {swarm}"
        assert task(fleet, task_id)["owner"] == swarm
    assert len(won) == len(racers)  # one task per swarm: its second session got the same one


def test_an_agent_machine_registers_its_client_and_hooks(fleet: Fleet) -> None:
    frank = fleet.agent("frank", "swarm-f")
    reg = as_json(frank, "mcp", "config", "--agent", "cursor")
    server = json.loads(reg["content"])["mcpServers"]["infrafabric"]
    assert server["args"] == ["mcp"] and server["env"]["IF_BUS_URL"] == frank["IF_BUS_URL"]
    assert server["env"]["IF_AGENT_TOKEN_FILE"] == frank["IF_AGENT_TOKEN_FILE"]
    assert server["env"]["IF_BUS_TLS_CA"] == frank["IF_BUS_TLS_CA"]
    token = Path(frank["IF_AGENT_TOKEN_FILE"]).read_text().strip()
    assert token not in json.dumps(reg)  # the file is named, never its secret
    repo = fleet.root / "frank-repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    done = subprocess.run([IFCTL, "hooks", "install", "--agent", "claude", "--json"], env=frank, cwd=repo,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    hooks = json.loads((repo / ".claude" / "settings.json").read_text())["hooks"]
    assert frank["IF_BUS_URL"] in json.dumps(hooks)


async def test_an_agents_mcp_server_outlives_a_gateway_restart(tmp_path: Path) -> None:
    from infrafabric.agent.gateway import Gateway

    own = Fleet(tmp_path)
    try:
        gina = own.agent("gina", "swarm-g")
        async with Client(StdioServerParameters(command=IFCTL, args=["mcp"], env=gina)) as c:
            assert not (await c.call_tool("budget_status", {})).is_error
            home = Path(own.server["IF_HOME"])
            port = Gateway(home).info().port  # type: ignore[union-attr]
            Gateway(home).stop()  # an upgrade, a reboot: the gateway goes, then comes back on its port
            during = await c.call_tool("budget_status", {})
            assert during.is_error and "gateway" in during.content[0].text  # type: ignore[union-attr]
            run(own.server, "coordinator", "start", "--listen", f"127.0.0.1:{port}",
                "--advertise", "127.0.0.1")
            after = await c.call_tool("budget_status", {})
            assert not after.is_error, after.content
            assert json.loads(after.content[0].text)["swarm_id"] == "swarm-g"  # type: ignore[union-attr]
    finally:
        run(own.server, "coordinator", "stop", code=None)
