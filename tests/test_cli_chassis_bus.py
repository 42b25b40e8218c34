"""``ifctl chassis load|exec|creds|slo|reputation`` as real subprocesses against a real NATS server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus.servers import NatsServer
from support import CONTRACT

IFCTL = str(Path(sys.executable).with_name("ifctl"))
WAT = Path(__file__).parent / "chassis" / "wat"
Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(nats_server: NatsServer, namespace: str, tmp_path: Path) -> Runner:
    env = {**os.environ, "IF_BUS_URL": f"{nats_server.url}?namespace={namespace}",
           "IF_HOME": str(tmp_path / "home"), "USER": "alice"}
    (tmp_path / "coder.yaml").write_text(CONTRACT)

    def ifctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IFCTL, *args], capture_output=True, text=True, env=env, timeout=60,
                              cwd=tmp_path)

    return ifctl


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout) if result.stdout.startswith("{") else result.stdout


def test_load_exec_slo_reputation_and_the_witness(run: Runner) -> None:
    ok(run("governor", "register", "coder", "--cap", "code-analysis:python", "--cost-per-hour", "2",
           "--budget", "5"))
    loaded = ok(run("chassis", "load", "coder", str(WAT / "task_audit.wat"), "--contract", "coder.yaml",
                    "--json"))
    assert loaded["shared"] and loaded["contract"]["resource_limits"]["max_fuel"] == 1_000_000
    done = ok(run("chassis", "exec", "coder", "--input", "0", "--task-id", "T1", "--json"))
    assert done["output"] == "ok" and done["reputation"] == "1.0000"
    stopped = run("chassis", "exec", "coder", "--input", "1", "--task-id", "T2", "--json")
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["limit"] == "fuel"
    slo = run("chassis", "slo", "coder", "--json")
    assert slo.returncode == 1  # 1 of 2 failed: out of compliance
    assert json.loads(slo.stdout)["violations"] == ["success_rate"]
    rep = ok(run("chassis", "reputation", "coder", "--json"))
    assert rep["reputation"] == "0.4000" and rep["governor_reputation"] == "0.4000"  # 0.8 x 0.5
    assert len(rep["history"]) == 2
    ok(run("chassis", "slo", "coder", "--success-rate", "0.5"))  # a looser objective: compliant again
    query = run("witness", "query", "--component", "IF.chassis", "--json")
    ops = {json.loads(line)["operation"] for line in query.stdout.splitlines()}
    assert {"swarm_loaded", "task_executed", "task_limit_exceeded"} <= ops
    ok(run("witness", "verify"))


def test_exec_in_a_worker_process_keeps_the_contract(run: Runner, tmp_path: Path) -> None:
    """--isolation process: the task runs in a worker with no check compiled in; the contract's
    deadline kills it, and the run is an SLO sample like any other."""
    (tmp_path / "spin.yaml").write_text(
        "swarm_id: spinner\nresource_limits: {max_execution_time_seconds: 0.5}\n")
    ok(run("chassis", "load", "spinner", str(WAT / "task_audit.wat"), "--contract", "spin.yaml"))
    done = ok(run("chassis", "exec", "spinner", "--input", "0", "--isolation", "process", "--json"))
    assert done["output"] == "ok" and done["fuel_used"] is None
    stopped = run("chassis", "exec", "spinner", "--input", "1", "--isolation", "process", "--json")
    assert stopped.returncode == 1, stopped.stderr
    assert json.loads(stopped.stdout)["limit"] == "timeout"
    assert "worker process was killed" in json.loads(stopped.stdout)["message"]
    assert ok(run("chassis", "slo", "spinner", "--json", "--success-rate", "0.5"))["samples"] == 2
    bad = run("chassis", "exec", "spinner", "--isolation", "fork")
    assert bad.returncode == 2 and "Invalid value for '--isolation'" in bad.stderr


def test_creds_issue_shows_the_token_once_and_revoke_by_token(run: Runner) -> None:
    issued = ok(run("chassis", "creds", "issue", "coder", "T1", "--ttl", "60", "--endpoint", "search/*",
                    "--json"))
    token = issued["api_token"]
    assert token.startswith("ifc_") and issued["allowed_endpoints"] == ["search/*"]
    listed = ok(run("chassis", "creds", "list", "--json"))
    assert [c["id"] for c in listed["credentials"]] == [issued["id"]]
    assert token not in json.dumps(listed)
    revoked = ok(run("chassis", "creds", "revoke", token, "--json"))
    assert revoked["revoked"] and revoked["revoked_by"] == "alice"
    assert token not in run("witness", "query", "--json").stdout


@pytest.mark.parametrize(("args", "says"), [
    (("chassis", "exec", "nobody"), "has no module loaded"),
    (("chassis", "load", "coder", "missing.wat", "--contract", "coder.yaml"), "missing.wat: no such module"),
    (("chassis", "load", "coder", "x.wat", "--contract", "nope.yaml"), "nope.yaml: no such contract file"),
    (("chassis", "load", "other", str(WAT / "task_echo.wat"), "--contract", "coder.yaml"),
     "swarm_id is 'coder', not 'other'"),
    (("chassis", "creds", "issue", "coder", "T1", "--ttl", "0", "--endpoint", "a"), "ttl"),
    (("chassis", "creds", "revoke", "0123456789abcdef"), "no credential"),
    (("chassis", "slo", "coder", "--success-rate", "2"), "success_rate"),
    (("chassis", "exec", "coder", "--input", "{bad"), "not JSON"),
])
def test_bad_input_exits_2_naming_it(run: Runner, args: tuple[str, ...], says: str) -> None:
    result = run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr and "Traceback" not in result.stderr
