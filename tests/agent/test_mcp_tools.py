"""Every MCP tool and resource through the SDK's in-memory client, on every
backend: what an agent gets, what it is refused (with what to do next), and
that a refused or malformed call writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from infrafabric.agent import AgentSession, build_server
from infrafabric.bus import EventBus
from infrafabric.fleet import Fleet, assemble
from infrafabric.governor import SwarmProfile, usd

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fleet(bus: EventBus) -> Fleet:
    f = assemble(bus, actor="test", signer=None)
    await f.coordinator.create_tasks([
        {"id": "A", "title": "write the parser", "description": "parse boards",
         "acceptance_criteria": ["parses the seed board"], "deliverable": "src/parser.py",
         "capabilities": ["code:python"]},
        {"id": "B", "title": "document the parser", "dependencies": ["A"], "capabilities": ["docs:markdown"]},
    ])
    return f


def client_for(fleet: Fleet, swarm: str) -> Client:
    session = AgentSession(fleet, swarm)

    async def session_for() -> AgentSession:
        return session

    return Client(build_server(session_for))


async def call(c: Client, tool: str, **args: Any) -> Any:
    result = await c.call_tool(tool, args)
    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    data = json.loads(text)
    assert text == json.dumps(data, separators=(",", ":"))  # compact JSON
    return data


async def refused(c: Client, tool: str, **args: Any) -> str:
    result = await c.call_tool(tool, args)
    assert result.is_error, result.content
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text
    return text


async def snapshot(bus: EventBus) -> dict[str, bytes]:
    return {e.key: e.value for e in await bus.list("")}


async def test_tools_are_listed_with_annotations(fleet: Fleet) -> None:
    async with client_for(fleet, "s1") as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) >= {"task_next", "task_heartbeat", "task_complete", "task_fail", "task_block",
                          "task_release", "board_status", "budget_status", "cost_track"}
    assert tools["board_status"].annotations.read_only_hint is True
    assert tools["budget_status"].annotations.read_only_hint is True
    assert tools["task_fail"].annotations.destructive_hint is True
    assert tools["task_next"].annotations.read_only_hint is False
    wait = tools["task_next"].input_schema["properties"]["wait_s"]
    assert wait["maximum"] == 50 and wait["default"] == 25
    for t in tools.values():
        assert t.description and len(t.description) > 40


async def test_the_whole_protocol(fleet: Fleet) -> None:
    await fleet.register_swarm("coder", ["code:python"])
    await fleet.register_swarm("writer", ["docs:markdown"])
    await fleet.governor.set_budget("coder", usd("10"))
    async with client_for(fleet, "coder") as coder, client_for(fleet, "writer") as writer:
        got = await call(coder, "task_next", wait_s=0)
        assert got["task"]["id"] == "A"
        assert got["task"]["acceptance_criteria"] == ["parses the seed board"]
        assert got["task"]["deliverable"] == "src/parser.py"
        assert 590 < got["lease_s"] <= 600
        claim = got["claim_id"]
        again = await call(coder, "task_next", wait_s=0)  # forgot it holds A: gets A back, not a second task
        assert again["task"]["id"] == "A" and again["already_held"] is True

        empty = await call(writer, "task_next", wait_s=0)
        assert empty["task"] is None and empty["reason"] == "waiting"
        assert any("B: blocked by A" in d for d in empty["details"])

        beat = await call(coder, "task_heartbeat", task_id="A", note="parser half done", claim_id=claim)
        assert beat["task_id"] == "A" and beat["lease_s"] > 590
        assert (await fleet.coordinator.get_task("A")).progress == "parser half done"

        done = await call(coder, "task_complete", task_id="A", summary="parser written", commit="abc123",
                          result={"files": ["src/parser.py"]}, cost_usd="0.42", claim_id=claim)
        assert done["status"] == "completed" and done["unblocked"] == ["B"]
        assert done["budget_left"] == "$9.58"
        task_a = await fleet.coordinator.get_task("A")
        assert task_a.result == {"result": {"files": ["src/parser.py"]}, "summary": "parser written",
                                 "commit": "abc123", "cost": "$0.42"}

        handed = await call(writer, "task_next", wait_s=0)  # the dependency's result comes with it
        assert handed["task"]["id"] == "B"
        assert handed["dependencies"][0]["id"] == "A"
        assert handed["dependencies"][0]["result"]["summary"] == "parser written"
        failed = await call(writer, "task_fail", task_id="B", error="no markdown linter")
        assert failed["status"] == "available" and failed["attempts_left"] == 2
        again = await call(writer, "task_next", wait_s=0)
        assert again["task"]["last_error"] == "no markdown linter"
        released = await call(writer, "task_release", task_id="B", reason="going home")
        assert released["status"] == "available"

        board = await call(coder, "board_status")
        assert board["counts"] == {"completed": 1, "available": 1} and board["open"][0]["id"] == "B"
        # an in-memory session marks nobody present (ifctl mcp does): B waits with nobody live
        assert board["live_swarms"] == [] and board["unattended"] == ["B"]
        async with fleet.coordinator.present("writer", via="mcp"):
            board = await call(coder, "board_status")
            assert board["live_swarms"] == ["writer"] and board["unattended"] == []
        budget = await call(coder, "budget_status")
        assert budget == {"swarm_id": "coder", "breaker": "closed", "limit": "$10.00", "spent": "$0.42",
                          "reserved": "$0.00", "remaining": "$9.58"}
        tracked = await call(coder, "cost_track", operation="llm_call", amount_usd="0.08", task_id="A")
        assert tracked["budget_left"] == "$9.50"

        board_res = await coder.read_resource("infrafabric://board")
        assert json.loads(board_res.contents[0].text)["total"] == 2  # type: ignore[union-attr]
        task_res = await coder.read_resource("infrafabric://task/A")
        data = json.loads(task_res.contents[0].text)  # type: ignore[union-attr]
        assert data["status"] == "completed" and "claim_id" not in data


async def test_a_block_brings_helpers(fleet: Fleet) -> None:
    await fleet.register_swarm("coder", ["code:python"])
    await fleet.register_swarm("k8s", ["infra:kubernetes"])
    async with client_for(fleet, "coder") as c:
        await call(c, "task_next", wait_s=0)
        async with fleet.coordinator.blockers() as reports:
            got = await call(c, "task_block", task_id="A", message="needs a cluster",
                             capabilities=["infra:kubernetes"])
            report = await reports.get(5)
    assert got["reported"] is True
    assert report["blocker_info"]["capabilities"] == ["infra:kubernetes"]
    assert report["swarm_id"] == "coder"
    # the governor found the swarm that offers what is needed (not the task's own capabilities)
    assert [h["swarm_id"] for h in got["help"]["helpers"]] == ["k8s"]


async def test_refusals_say_what_to_do_next_and_write_nothing(fleet: Fleet, bus: EventBus) -> None:
    await fleet.register_swarm("coder", ["code:python"])
    await fleet.register_swarm("other", ["code:python"])
    await fleet.governor.set_budget("coder", usd("1"))
    async with client_for(fleet, "coder") as c, client_for(fleet, "other") as o:
        got = await call(c, "task_next", wait_s=0)
        await fleet.coordinator.ready.settle(10)  # the hand-out's tidying (its slot marked dead) is done
        before = await snapshot(bus)
        text = await refused(o, "task_complete", task_id="A")
        assert "does not hold the claim" in text and "task_next" in text
        text = await refused(c, "task_heartbeat", task_id="A", claim_id="0" * 16)
        assert "stale" in text
        text = await refused(c, "task_complete", task_id="nope")
        assert "nope" in text
        assert await snapshot(bus) == before
        # the budget runs out: the breaker trips, and task_next says what resumes the swarm
        await call(c, "cost_track", operation="llm_call", amount_usd="2")
        await call(c, "task_release", task_id="A", claim_id=got["claim_id"])
        text = await refused(c, "task_next", wait_s=0)
        assert "ifctl governor reset-circuit-breaker coder" in text


@pytest.mark.parametrize(("tool", "args", "named"), [
    ("task_next", {"wait_s": 51}, "wait_s"),
    ("task_next", {"wait_s": "soon"}, "wait_s"),
    ("task_next", {"lease_s": 1}, "lease_s"),
    ("task_heartbeat", {}, "task_id"),
    ("task_heartbeat", {"task_id": "../../etc"}, "task_id"),
    ("task_heartbeat", {"task_id": "A", "note": "x" * 5000}, "note"),
    ("task_complete", {"task_id": "A", "cost_usd": "nan"}, "cost_usd"),
    ("task_complete", {"task_id": "A", "cost_usd": "9" * 39}, "cost_usd"),
    ("task_complete", {"task_id": "A", "commit": "a\x1b[31m"}, "commit"),
    ("task_fail", {"task_id": "A"}, "error"),
    ("task_block", {"message": "x", "capabilities": ["Not A Cap"]}, "capabilities"),
    ("task_block", {"message": "x", "task_id": "ghost"}, "ghost"),
    ("cost_track", {"operation": "llm", "amount_usd": "-1"}, "amount_usd"),
    ("cost_track", {"operation": "llm", "amount_usd": "1e308"}, "amount_usd"),
    ("cost_track", {"operation": "llm"}, "amount_usd"),
    ("board_status", {"limit": 0}, "limit"),
    ("no_such_tool", {}, "no_such_tool"),
])
async def test_bad_arguments_are_errors_naming_them(fleet: Fleet, bus: EventBus, tool: str,
                                                   args: dict[str, Any], named: str) -> None:
    await fleet.register_swarm("coder", ["code:python"])
    await fleet.governor.set_budget("coder", usd("10"))
    async with client_for(fleet, "coder") as c:
        await call(c, "task_next", wait_s=0)
        await fleet.coordinator.ready.settle(10)  # the hand-out's tidying is done
        before = await snapshot(bus)
        text = await refused(c, tool, **args)
    assert named in text
    assert await snapshot(bus) == before


async def test_a_cost_never_turns_a_recorded_completion_into_an_error(fleet: Fleet) -> None:
    await fleet.register_swarm("coder", ["code:python"])  # no budget: unmetered
    async with client_for(fleet, "coder") as c:
        await call(c, "task_next", wait_s=0)
        done = await call(c, "task_complete", task_id="A", summary="parser", cost_usd="0.42")
    assert done["status"] == "completed" and done["cost"] == "$0.42"
    assert "no budget" in done["cost_note"]
    assert (await fleet.coordinator.get_task("A")).result == {"summary": "parser", "cost": "$0.42"}


async def test_a_progress_note_is_witnessed_and_handed_to_the_next_holder(fleet: Fleet) -> None:
    await fleet.register_swarm("coder", ["code:python"])
    await fleet.register_swarm("heir", ["code:python"])
    async with client_for(fleet, "coder") as c:
        await call(c, "task_next", wait_s=0, lease_s=30)
        await call(c, "task_heartbeat", task_id="A", note="lexer done, parser next")
        await call(c, "task_heartbeat", task_id="A")  # a plain renewal: no entry
    progress = await fleet.witness.get_operations(operation="task_progress")
    assert [e.params for e in progress] == [{"task_id": "A", "swarm_id": "coder",
                                             "note": "lexer done, parser next"}]
    await fleet.coordinator.release_task("coder", "A")
    async with client_for(fleet, "heir") as h:
        got = await call(h, "task_next", wait_s=0)
    assert got["task"]["last_progress"] == "lexer done, parser next"


async def test_an_agent_takes_only_what_its_budget_covers(fleet: Fleet) -> None:
    """Through MCP as an agent calls it: a claim holds its estimate (shown as
    reserved), a task the rest of the budget cannot cover is not handed out,
    and the answer says why."""
    await fleet.coordinator.create_tasks([
        {"id": "C", "title": "a two-hour job", "estimate_hours": "2", "capabilities": ["code:python"]},
        {"id": "D", "title": "another two-hour job", "estimate_hours": "2", "capabilities": ["code:python"]},
    ])
    await fleet.governor.register_swarm(SwarmProfile(id="coder", capabilities=["code:python"],
                                                     cost_per_hour_micros=usd("2")), budget_micros=usd("5"))
    async with client_for(fleet, "coder") as coder:
        got = await call(coder, "task_next", wait_s=0)
        assert got["task"]["id"] == "A"  # no estimate: 1 h at $2/h is held
        budget = await call(coder, "budget_status")
        assert budget["reserved"] == "$2.00" and budget["remaining"] == "$3.00"
        await call(coder, "task_release", task_id="A", claim_id=got["claim_id"])
        budget = await call(coder, "budget_status")
        assert budget["reserved"] == "$0.00" and budget["remaining"] == "$5.00"
        await call(coder, "cost_track", operation="llm_call", amount_usd="3.50")
        empty = await call(coder, "task_next", wait_s=0)
        assert empty["task"] is None
        assert any(d.startswith("C: refused: estimated $4.00 (2 h at $2.00/h) exceeds the $1.50 left")
                   for d in empty["details"]), empty["details"]
        assert any(d.startswith("A: refused: estimated $2.00 (1 h, no estimate given at $2.00/h)")
                   for d in empty["details"]), empty["details"]
