"""``IFChassis`` end to end on memory, NATS and etcd: contracts, loads, task
runs, per-task credentials, SLO samples, reputation into the governor, the witness."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.chassis.core import IFChassis
from infrafabric.chassis.hostapi import Transport
from infrafabric.chassis.sandbox import Sandbox
from infrafabric.errors import (
    ConfigurationError,
    ForbiddenImportError,
    GuestTrapError,
    ModuleLoadError,
    OutOfFuelError,
    TaskNotFoundError,
)
from infrafabric.governor import IFGovernor, SwarmProfile
from infrafabric.witness import Witness

WAT = Path(__file__).parent / "wat"


class Echo(Transport):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
        self.calls.append(endpoint)
        return json.dumps({"endpoint": endpoint}).encode()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Sandbox(cache_dir=tmp_path_factory.mktemp("modules")) as sb:
        yield sb


def contract(swarm: str, **extra: Any) -> dict[str, Any]:
    return {"swarm_id": swarm, "capabilities": ["code-analysis:python"], "version": "1.2.0", **extra}


async def test_load_and_execute_feed_slo_reputation_and_witness(bus: EventBus, sandbox: Sandbox) -> None:
    witness = Witness(bus, actor="test")
    gov = IFGovernor(bus)
    await gov.register_swarm(SwarmProfile(id="coder", capabilities=["code-analysis:python"]))
    async with IFChassis(bus, sandbox=sandbox, reputation_sink=gov.set_reputation,
                         observers=[witness.observer("IF.chassis")]) as chassis:
        loaded = await chassis.load_swarm("coder", WAT / "task_echo.wat", contract("coder"))
        assert loaded.shared and loaded.module.kind == "task"
        run = await chassis.execute_task("coder", {"id": "T1", "x": [1, 2]})
        assert run.output == {"id": "T1", "x": [1, 2]} and run.task_id == "T1"
        assert run.logs and run.logs[0].startswith("echo:")
        assert run.reputation == Decimal(1)
        samples = await chassis.slo.samples("coder")
        assert len(samples) == 1 and samples[0].success
        audit = await chassis.load_swarm("coder", WAT / "task_audit.wat", contract(
            "coder", resource_limits={"max_fuel": 100_000}))
        assert audit.module.digest != loaded.module.digest
        with pytest.raises(OutOfFuelError):
            await chassis.execute_task("coder", 1, task_id="T2")  # an infinite loop
        with pytest.raises(GuestTrapError):
            await chassis.execute_task("coder", 6, task_id="T3")  # unreachable
        assert (await chassis.execute_task("coder", 0, task_id="T4")).output == "ok"  # host carries on
        compliance = await chassis.slo.calculate_slo_compliance("coder")
        assert compliance.samples == 4 and not compliance.success_rate_compliant
        profile = await gov.profile("coder")
        assert profile is not None and profile.reputation < Decimal("0.5")  # 2 of 4 failed: 0.8 x 0.5
    ops = [(e.operation, e.params.get("limit")) async for e in witness.entries()]
    assert ("swarm_loaded", None) in ops and ("task_executed", None) in ops
    assert ("task_limit_exceeded", "fuel") in ops and ("task_trapped", "trap") in ops
    assert (await witness.verify()).ok


async def test_each_task_gets_its_own_credential_revoked_at_the_end(bus: EventBus, sandbox: Sandbox) -> None:
    witness = Witness(bus, actor="test")
    transport = Echo()
    async with IFChassis(bus, sandbox=sandbox, transport=transport,
                         observers=[witness.observer("IF.chassis")]) as chassis:
        await chassis.load_swarm("searcher", WAT / "task_api.wat",
                                 contract("searcher", allowed_endpoints=["search/*"]))
        run = await chassis.execute_task("searcher", 2, task_id="S1")
        assert run.output == {"endpoint": "search/web"} and run.api_calls == 2 and not run.refusals
        await chassis.load_swarm("offline", WAT / "task_api.wat", contract("offline"))
        refused = await chassis.execute_task("offline", 1, task_id="S2")
        assert refused.output == {"error": "refused"}  # no endpoint in the contract, no credential
        await chassis.load_swarm("narrow", WAT / "task_api.wat",
                                 contract("narrow", allowed_endpoints=["mail/send"]))
        scoped = await chassis.execute_task("narrow", 1, task_id="S3")
        assert scoped.output == {"error": "refused"} and "does not allow" in scoped.refusals[0]
        creds = await chassis.credentials.list(include_expired=True)
        assert {(c.swarm_id, c.task_id) for c in creds} == {("searcher", "S1"), ("narrow", "S3")}
        assert all(c.revoked for c in creds)
    assert transport.calls == ["search/web", "search/web"]
    entries = [e async for e in witness.entries()]
    assert any(e.operation == "credential_refused" and e.params["swarm_id"] == "narrow" for e in entries)
    assert "ifc_" not in json.dumps([e.to_dict() for e in entries])  # no token ever witnessed


async def test_another_process_runs_a_swarm_loaded_elsewhere(bus_url: str, sandbox: Sandbox,
                                                              tmp_path: Path) -> None:
    async with connect(bus_url) as a, connect(bus_url) as b:
        async with IFChassis(a, sandbox=sandbox) as loader:
            await loader.load_swarm("shared", WAT / "task_echo.wat", contract("shared"))
        with Sandbox(cache_dir=tmp_path) as other:
            async with IFChassis(b, sandbox=other) as runner:
                assert (await runner.execute_task("shared", {"n": 1})).output == {"n": 1}
                with pytest.raises(TaskNotFoundError):
                    await runner.execute_task("never-loaded", {})


async def test_bad_contracts_and_modules_change_nothing(bus: EventBus, sandbox: Sandbox) -> None:
    seen: list[str] = []

    async def observe(op: str, params: dict[str, Any]) -> None:
        seen.append(op)

    async with IFChassis(bus, sandbox=sandbox, observers=[observe]) as chassis:
        with pytest.raises(ConfigurationError, match=r"resource_limits\.max_memory_mb"):
            await chassis.load_swarm("s", WAT / "task_echo.wat",
                                     contract("s", resource_limits={"max_memory_mb": 0}))
        with pytest.raises(ConfigurationError, match="not 's'"):
            await chassis.load_swarm("s", WAT / "task_echo.wat", contract("t"))
        with pytest.raises(ModuleLoadError) as bad:
            await chassis.load_swarm("s", b"\x00asm\x01\x00", contract("s"))
        assert bad.value.exit_code == 2
        with pytest.raises(ForbiddenImportError):
            await chassis.load_swarm("s", WAT / "forbidden_system.wat", contract("s"))
        with pytest.raises(ModuleLoadError, match="WASI command"):
            await chassis.load_swarm("s", WAT / "cmd_hello.wat", contract("s"))
        assert await bus.list("chassis/contracts/") == []
        assert seen.count("swarm_load_refused") == 2
