"""``ifctl witness`` as real subprocesses against a real NATS server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from infrafabric.bus import connect
from infrafabric.bus.servers import NatsServer
from infrafabric.witness.log import entry_key

IFCTL = str(Path(sys.executable).with_name("ifctl"))


def test_commands_are_witnessed_traced_and_tampering_exits_1(
        nats_server: NatsServer, namespace: str, tmp_path: Path) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    env = {**os.environ, "IF_BUS_URL": url, "IF_HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IFCTL, *args], capture_output=True, text=True, env=env, timeout=60)

    assert run("swarm", "register", "s1").returncode == 0
    assert run("task", "create", "A", "--title", "a").returncode == 0
    claim = run("task", "claim", "A", "--swarm", "s1", "--trace", "--json")
    traced = json.loads(claim.stdout)
    assert [e["operation"] for e in traced["witness_entries"]] == ["task_claimed"]
    trace = run("witness", "trace", traced["trace_id"], "--json")
    assert [e["operation"] for e in json.loads(trace.stdout)["entries"]] == ["task_claimed"]

    cp_file = tmp_path / "kept.checkpoint"
    assert run("witness", "checkpoint", "--out", str(cp_file)).returncode == 0
    assert (tmp_path / "witness.key").stat().st_mode & 0o077 == 0  # private key not readable by others
    ok = run("witness", "verify", "--from-checkpoint", str(cp_file), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["entries"] == 3

    query = run("witness", "query", "--actor", "s1", "--json")
    assert {json.loads(line)["operation"] for line in query.stdout.splitlines()} == {
        "swarm_registered", "task_claimed"}

    async def edit_entry_2() -> None:
        async with connect(url) as bus:
            entry = await bus.get(entry_key(2))
            assert entry is not None
            await bus.put(entry_key(2), entry.value.replace(b'"task_created"', b'"task_deleted"'))

    asyncio.run(edit_entry_2())
    bad = run("witness", "verify", "--json")
    report = json.loads(bad.stdout)
    assert bad.returncode == 1 and report["first_bad_seq"] == 2 and "edited" in report["problem"]
    assert run("witness", "verify").stdout.startswith("TAMPERED at entry 2")
    garbage = tmp_path / "junk.checkpoint"
    garbage.write_text("not a checkpoint")
    junk = run("witness", "verify", "--from-checkpoint", str(garbage))
    assert junk.returncode == 2 and "junk.checkpoint" in junk.stderr
