"""Start-up: a command imports only what it uses.

An agent's client starts an ``ifctl`` process for every hook and every shell
heartbeat, so what each command imports is its start-up cost. These tests run
real commands in a fresh interpreter and check which modules got loaded (a
fact, unlike a time: the times are in ``ifctl bench startup``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest

from infrafabric import cli as cli_package
from infrafabric.bus.servers import NatsServer

# runs the CLI's entry point as the console script does, then prints the modules it loaded
_PROBE = textwrap.dedent("""
    import json, sys
    from infrafabric.cli import main
    sys.argv = ["ifctl", *json.loads(sys.argv[1])]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    sys.stdout.flush()
    sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
    sys.stderr.write("EXIT " + json.dumps(code) + "\\n")
""")


def _loaded(args: list[str], env: dict[str, str] | None = None) -> tuple[set[str], str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    tail = done.stderr.rsplit("\nMODULES ", 1)
    assert len(tail) == 2, done.stderr[-2000:]
    modules_line, exit_line = tail[1].strip().split("\n")[:2]
    assert exit_line == "EXIT 0", f"{args}: {exit_line}\n{done.stdout[-1000:]}\n{tail[0][-2000:]}"
    return set(json.loads(modules_line)), done.stdout


def _tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_lists_every_group_without_importing_any() -> None:
    modules, out = _loaded(["--help"])
    for name in cli_package._COMMANDS:
        assert f"\n  {name} " in out, f"{name} missing from ifctl --help"
    loaded_groups = sorted(m for m in modules if m.startswith("infrafabric.") and m not in {
        "infrafabric.cli", "infrafabric.cli.app", "infrafabric.errors"})
    assert loaded_groups == []
    # nothing --help does not use: no asyncio, no rich, no pydantic, no bus client
    assert not _tops(modules) & {"asyncio", "rich", "pydantic", "nats", "wasmtime", "yaml", "cryptography",
                                 "prometheus_client"}


def test_the_listed_summaries_are_the_groups_own() -> None:
    """``ifctl --help`` lists lazy groups by the summaries in ``_COMMANDS``: each
    must be the one its group says of itself, so the listing cannot drift."""
    group = cli_package.cli
    ctx = click.Context(group)
    for name, (_target, summary) in cli_package._COMMANDS.items():
        command = group.get_command(ctx, name)
        assert command is not None, name
        assert command.get_short_help_str(limit=10_000) == summary, name


@pytest.mark.engine
def test_a_heartbeat_loads_no_sandbox_web_yaml_crypto_or_metrics(nats_server: NatsServer, namespace: str,
                                                                   tmp_path: Path) -> None:
    """The shell loop's heartbeat (docs/MIGRATION-GIT-TO-ETCD.md) renews a lease:
    it loads the coordinator and the bus client, not the sandbox, the
    dashboard, MCP, the policy's YAML, the witness's signing keys or the
    Prometheus client (a heartbeat records no claim)."""
    env = {"IF_BUS_URL": f"{nats_server.url}?namespace={namespace}", "IF_HOME": str(tmp_path)}
    for args in (["task", "create", "H1", "--title", "a task"], ["swarm", "register", "hb-swarm"]):
        _loaded(args, env)
    claimed, out = _loaded(["task", "claim", "H1", "--swarm", "hb-swarm", "--json"], env)
    claim_id = json.loads(out)["claim_id"]
    modules, out = _loaded(["task", "heartbeat", "H1", "--swarm", "hb-swarm", "--claim", claim_id], env)
    assert "renewed" in out
    assert "infrafabric.coordinator.core" in modules and "nats" in _tops(modules)
    unused = {"wasmtime", "yaml", "cryptography", "prometheus_client", "starlette", "uvicorn", "mcp", "aetcd",
              "grpc", "http"}
    assert not _tops(modules) & unused, sorted(_tops(modules) & unused)
    assert not {m for m in modules if m.startswith(("infrafabric.chassis", "infrafabric.bench",
                                                    "infrafabric.web", "infrafabric.agent.server",
                                                    "infrafabric.coordinator.infer"))}
    # a claim does record a metric: the same process shape, loading what it uses
    assert "prometheus_client" in _tops(claimed)
