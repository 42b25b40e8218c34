"""The dashboard's HTTP API, served by uvicorn on loopback (as ``ifctl web`` serves it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infrafabric.bus import EventBus, connect
from infrafabric.bus.layout import push_subject
from infrafabric.cli.web import Served, serve
from infrafabric.coordinator import IFCoordinator
from infrafabric.fleet import assemble
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.web import FleetView
from infrafabric.witness import Witness
from support import until

TOKEN = "operator-token-for-tests-0123456789"


def _view(served: Served) -> FleetView:
    view = served.app.state.dashboard.view
    assert view is not None
    return view


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


async def test_page_state_events_and_metrics(bus: EventBus) -> None:
    coord = IFCoordinator(bus, observers=[Witness(bus).observer("IF.coordinator")])
    gov = IFGovernor(bus)
    await coord.create_tasks([{"id": f"t{i}", "title": f"task {i}"} for i in range(4)]
                             + [{"id": "t9", "title": "last", "dependencies": ["t0"]}])
    await gov.register_swarm(SwarmProfile(id="alpha", capabilities=[], reputation=Decimal("0.8")))
    await gov.set_budget("alpha", 10_000_000)
    await gov.track_cost("alpha", "tokens", 2_500_000)
    await gov.register_swarm(SwarmProfile(id="beta", capabilities=[]))
    await gov.trip("beta", "looping on the same error", by="test")
    assert await coord.claim_task("alpha", "t0") and await coord.claim_task("alpha", "t1")

    async with serve(bus, port=0, token=TOKEN) as served, \
            httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text and "//cdn" not in page.text
        for asset in ("app.js", "style.css"):
            got = await http.get(f"/static/{asset}")
            assert got.status_code == 200 and got.content, asset
            assert "https://" not in got.text, f"{asset} must not load anything from the Internet"
        state = (await http.get("/api/state")).json()
        assert state["actions"] is True
        assert state["tasks"]["t0"]["status"] == "claimed" and state["tasks"]["t9"]["status"] == "blocked"

        async with http.stream("GET", "/api/events") as stream:
            events = _sse(stream)
            kind, snap = await anext(events)
            assert kind == "snapshot" and snap["tasks"]["t0"]["owner"] == "alpha"
            await coord.complete_task("alpha", "t0", "done")
            async for kind, data in events:
                if kind == "task" and data["id"] == "t0":
                    assert data["value"]["status"] == "completed"
                    break
        view = _view(served)
        await until(view, "t9 unblocked", lambda: view.tasks["t9"].status.value == "available")

        witness = Witness(bus)
        await witness.append("IF.chassis", "task_limit_exceeded", {"swarm_id": "alpha", "limit": "memory"})
        await until(view, "the trap", lambda: sum(view.counts.traps.values()) == 1)
        assert (await http.post("/api/witness/verify", json={})).status_code == 401  # costly: the token
        verified = (await http.post("/api/witness/verify", json={},
                                    headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert verified["ok"] is True and verified["entries"] == view.witness_length

        text = (await http.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(name: str, **labels: str) -> float:
        family = next(name.removesuffix(suffix) for suffix in ("_total", "_count", "_sum", "")
                      if name.removesuffix(suffix) in families)
        found = [s.value for s in families[family].samples if s.name == name and s.labels == labels]
        assert len(found) == 1, (name, labels, families[family].samples)
        return found[0]

    assert value("infrafabric_tasks", status="claimed") == 1
    assert value("infrafabric_tasks", status="completed") == 1
    assert value("infrafabric_tasks", status="available") == 3  # t2, t3 and the unblocked t9
    assert value("infrafabric_claims_won_total", swarm="alpha") == 2
    assert value("infrafabric_task_wait_seconds_count") == 2
    assert value("infrafabric_budget_limit_micro_usd", swarm="alpha") == 10_000_000
    assert value("infrafabric_budget_spent_micro_usd", swarm="alpha") == 2_500_000
    assert value("infrafabric_breaker_state", swarm="beta", state="open") == 1
    assert value("infrafabric_breaker_state", swarm="alpha", state="open") == 0
    assert value("infrafabric_swarm_reputation", swarm="alpha") == 0.8
    assert value("infrafabric_sandbox_traps_total", swarm="alpha", kind="memory") == 1
    assert value("infrafabric_witness_entries") == verified["entries"] >= 4
    assert value("infrafabric_witness_verify_ok") == 1
    assert value("infrafabric_bus_up") == 1
    assert value("infrafabric_last_claim_timestamp_seconds") > 0


@pytest.fixture
async def memory_bus(namespace: str) -> AsyncIterator[EventBus]:
    async with connect(f"memory://{namespace}") as bus:
        yield bus


async def test_breaker_reset_needs_the_token_and_an_explicit_confirmation(memory_bus: EventBus) -> None:
    bus = memory_bus
    gov = IFGovernor(bus)
    await gov.register_swarm(SwarmProfile(id="beta", capabilities=[]))
    await gov.trip("beta", "budget exhausted", by="test")
    path = "/api/breakers/beta/reset"
    good = {"Authorization": f"Bearer {TOKEN}"}

    async with serve(bus, port=0) as ro, httpx.AsyncClient(base_url=ro.url) as http:
        refused = await http.post(path, json={"confirm": "beta"}, headers=good)
        assert refused.status_code == 403 and "without an operator token" in refused.json()["error"]

    async with serve(bus, port=0, token=TOKEN) as served, httpx.AsyncClient(base_url=served.url) as http:
        cases: list[tuple[dict[str, str], Any, int, str]] = [
            ({}, {"confirm": "beta"}, 401, "operator token"),
            ({"Authorization": "Bearer wrong-token-wrong-token"}, {"confirm": "beta"}, 401, "operator token"),
            (good, {"confirm": "BETA"}, 400, "confirm: must be exactly 'beta'"),
            (good, {}, 400, "confirm"),
            (good, ["beta"], 400, "JSON object"),
            (good, {"confirm": "beta", "budget_micros": 1.5}, 400, "budget_micros"),
            (good, {"confirm": "beta", "budget_micros": -1}, 400, "budget_micros"),
            (good, {"confirm": "beta", "force": True}, 400, "unknown field(s): force"),
        ]
        for headers, body, status, message in cases:
            got = await http.post(path, json=body, headers=headers)
            assert got.status_code == status, (body, got.text)
            assert message in got.json()["error"], (body, got.text)
        bad_json = await http.post(path, content=b"{nope",
                                   headers={**good, "Content-Type": "application/json"})
        assert bad_json.status_code == 400 and "must be JSON" in bad_json.json()["error"]
        unknown = await http.post("/api/breakers/nobody/reset", json={"confirm": "nobody"}, headers=good)
        assert unknown.status_code == 404 and "no swarm 'nobody'" in unknown.json()["error"]
        # nothing above changed the breaker
        assert (await gov.breaker("beta")).state.value == "open"

        ok = await http.post(path, json={"confirm": "beta", "budget_micros": 3_000_000, "by": "alice"},
                             headers=good)
        assert ok.status_code == 200 and ok.json()["breaker"]["state"] == "closed", ok.text
        assert ok.json()["breaker"]["changed_by"] == "alice (web)"
        budget = await gov.budget("beta")
        assert budget is not None and (budget.limit_micros, budget.spent_micros) == (3_000_000, 0)
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["ok"] is True
    reset = [e async for e in Witness(bus).entries() if e.operation == "circuit_breaker_reset"]
    assert [e.params["by"] for e in reset] == ["alice (web)"]


async def test_reopen_a_failed_task_from_the_dashboard(memory_bus: EventBus) -> None:
    bus = memory_bus
    coord = IFCoordinator(bus, max_attempts=1)
    await coord.register_swarm("alpha")
    await coord.create_tasks([{"id": "F", "title": "fails"}, {"id": "G", "title": "fine"}])
    assert await coord.claim_task("alpha", "F")
    await coord.fail_task("alpha", "F", "tests red")
    good = {"Authorization": f"Bearer {TOKEN}"}

    async with serve(bus, port=0, token=TOKEN) as served, httpx.AsyncClient(base_url=served.url) as http:
        view = _view(served)
        assert [w["task"] for w in view.waiting() if w["kind"] == "failed"] == ["F"]
        cases: list[tuple[str, dict[str, str], Any, int, str]] = [
            ("F", {}, {"confirm": "F"}, 401, "operator token"),
            ("F", good, {"confirm": "G"}, 400, "confirm: must be exactly 'F' to reopen it"),
            ("F", good, {"confirm": "F", "reason": "x" * 501}, 400, "reason"),
            ("F", good, {"confirm": "F", "budget_micros": 1}, 400, "unknown field(s): budget_micros"),
            ("nope", good, {"confirm": "nope"}, 404, "no task 'nope'"),
            ("G", good, {"confirm": "G"}, 409, "G is available, not failed"),
        ]
        for task_id, headers, body, status, message in cases:
            got = await http.post(f"/api/tasks/{task_id}/reopen", json=body, headers=headers)
            assert got.status_code == status, (task_id, body, got.text)
            assert message in got.json()["error"], (task_id, body, got.text)
        assert (await coord.get_task("F")).status.value == "failed"  # nothing above changed it

        ok = await http.post("/api/tasks/F/reopen", json={"confirm": "F", "reason": "fixed", "by": "bob"},
                             headers=good)
        assert ok.status_code == 200 and ok.json()["task"]["status"] == "available", ok.text
        await until(view, "F available", lambda: view.tasks["F"].status.value == "available")
        assert not [w for w in view.waiting() if w["kind"] == "failed"]
        assert any(e["text"] == "F failed → available (reopened by bob (web): fixed)"
                   for e in view.events), list(view.events)
    entries = [e async for e in Witness(bus).entries() if e.operation == "task_reopened"]
    assert [(e.params["by"], e.params["reason"]) for e in entries] == [("bob (web)", "fixed")]


async def test_a_reopen_from_the_dashboard_goes_through_the_governor(bus: EventBus) -> None:
    """The dashboard builds the fleet as every front end does: the reopened
    task is pushed to the qualified swarm, never to one whose breaker is open."""
    fleet = assemble(bus, signer=None)
    gov, coord = fleet.governor, fleet.coordinator
    await gov.set_policy(ResourcePolicy(circuit_breaker_failure_threshold=10), by="test")
    for sid in ("tripped", "ok"):
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=["docs:markdown"]),
                                 budget_micros=9_000_000)
    await coord.create_task({"id": "F", "title": "fails", "capabilities": ["docs:markdown"]})
    for _ in range(coord.max_attempts):
        assert await coord.claim_task("ok", "F")
        await coord.fail_task("ok", "F", "tests red")
    await gov.trip("tripped", "testing", by="ops")
    good = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(bus, port=0, token=TOKEN) as served, httpx.AsyncClient(base_url=served.url) as http, \
            coord.pushed_tasks("tripped") as tripped, coord.pushed_tasks("ok") as ok:
        got = await http.post("/api/tasks/F/reopen", json={"confirm": "F", "by": "bob"}, headers=good)
        assert got.status_code == 200, got.text
        assert (await ok.get(10)).id == "F"
        await bus.publish(push_subject("tripped"), json.dumps({"id": "sentinel", "title": "s"}))
        assert (await tripped.get(10)).id == "sentinel"  # F was never pushed to it
    reopened = [e async for e in Witness(bus).entries() if e.operation == "task_reopened"]
    assert [(e.actor, e.severity) for e in reopened] == [("bob (web)", "notice")]


async def test_the_guard_refuses_rebinding_cross_origin_and_malformed_requests(memory_bus: EventBus) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(memory_bus, port=0, token=TOKEN) as served, \
            httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        page = await http.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        rebound = await http.get("/api/state", headers={"Host": "evil.example:8765"})
        assert rebound.status_code == 400 and "DNS rebinding" in rebound.json()["error"]
        assert rebound.headers["x-frame-options"] == "DENY"
        assert (await http.get("/api/state", headers={"Host": "localhost:1234"})).status_code == 200
        # a page on another site posting to the dashboard (text/plain needs no CORS preflight)
        csrf = await http.post("/api/witness/verify", content=b"{}", headers={
            **good, "Origin": "https://evil.example", "Content-Type": "text/plain"})
        assert csrf.status_code == 403 and "cross-origin" in csrf.json()["error"]
        plain = await http.post("/api/witness/verify", content=b"{}",
                                headers={**good, "Content-Type": "text/plain"})
        assert plain.status_code == 415
        assert (await http.post("/api/witness/verify", json={})).status_code == 401  # no token
        same = await http.post("/api/witness/verify", json={},
                               headers={**good, "Origin": served.url.rstrip("/")})
        assert same.status_code == 200 and same.json()["ok"] is True
        deep = await http.post("/api/tasks/T/reopen", content=b"[" * 30_000 + b"]" * 30_000,
                               headers={**good, "Content-Type": "application/json"})
        assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
        big = await http.post("/api/tasks/T/reopen", content=b" " * 70_000 + b"{}",
                              headers={**good, "Content-Type": "application/json"})
        assert big.status_code == 413


async def test_a_token_in_the_query_string_is_refused(memory_bus: EventBus) -> None:
    async with serve(memory_bus, port=0, token=TOKEN) as served, \
            httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        for query in (f"token={TOKEN}", f"a=1&access_token={TOKEN}", f"AUTH={TOKEN}", f"%74oken={TOKEN}"):
            refused = await http.get(f"/api/state?{query}")
            assert refused.status_code == 400 and "Authorization header" in refused.json()["error"]
            posted = await http.post(f"/api/witness/verify?{query}", json={})
            assert posted.status_code == 400  # not even with the token: a URL is logged and shared
        assert (await http.get("/api/state?tokenish=1")).status_code == 200  # a name that only starts alike


async def test_the_dashboard_serves_https_with_a_certificate(memory_bus: EventBus, tmp_path: Any) -> None:
    import ssl

    from infrafabric.pki import ensure_server_files
    from infrafabric.serving import server_tls

    ca, cert, key = ensure_server_files(tmp_path, ("127.0.0.1",))
    tls = server_tls(cert, key)
    async with serve(memory_bus, port=0, token=TOKEN, tls=tls) as served:
        assert served.url.startswith("https://")
        async with httpx.AsyncClient(base_url=served.url, timeout=10,
                                     verify=ssl.create_default_context(cafile=str(ca))) as http:
            assert (await http.get("/healthz")).status_code == 200
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:  # the system CAs: refused
            with pytest.raises(httpx.ConnectError):
                await http.get("/healthz")
