"""Start-up: a command imports only what it uses.

An agent's client starts an ``ifctl`` process for every hook and every shell
heartbeat, so what each command imports is its start-up cost. These tests run
real commands in a fresh interpreter and check which modules got loaded (a
fact, unlike a time: the times are in ``ifctl bench startup``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from infrafabric import cli as cli_package
from infrafabric.bus.servers import NatsServer
from support import ifctl_modules, top_modules


def test_help_lists_every_group_without_importing_any() -> None:
    modules, out, _ = ifctl_modules(["--help"])
    for name in cli_package._COMMANDS:
        assert f"\n  {name} " in out, f"{name} missing from ifctl --help"
    loaded_groups = sorted(m for m in modules if m.startswith("infrafabric.") and m not in {
        "infrafabric.cli", "infrafabric.cli.app", "infrafabric.errors"})
    assert loaded_groups == []
    # nothing --help does not use: no asyncio, no rich, no pydantic, no bus client
    assert not top_modules(modules) & {"asyncio", "rich", "pydantic", "nats", "wasmtime", "yaml",
                                       "cryptography", "prometheus_client"}


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
        ifctl_modules(args, env)
    claimed, out, _ = ifctl_modules(["task", "claim", "H1", "--swarm", "hb-swarm", "--json"], env)
    claim_id = json.loads(out)["claim_id"]
    modules, out, _ = ifctl_modules(["task", "heartbeat", "H1", "--swarm", "hb-swarm", "--claim", claim_id],
                                    env)
    assert "renewed" in out
    assert "infrafabric.coordinator.core" in modules and "nats" in top_modules(modules)
    unused = {"wasmtime", "yaml", "cryptography", "prometheus_client", "starlette", "uvicorn", "mcp", "aetcd",
              "grpc", "http"}
    assert not top_modules(modules) & unused, sorted(top_modules(modules) & unused)
    assert not {m for m in modules if m.startswith(("infrafabric.chassis", "infrafabric.bench",
                                                    "infrafabric.web", "infrafabric.agent.server",
                                                    "infrafabric.coordinator.infer"))}
    # a claim does record a metric: the same process shape, loading what it uses
    assert "prometheus_client" in top_modules(claimed)
