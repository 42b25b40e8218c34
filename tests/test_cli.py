"""The CLI driven as a real subprocess and through click's runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from infrafabric.bus.servers import free_port, pid_alive
from infrafabric.cli import cli
from support import PROTOCOL_COMMANDS

IFCTL = str(Path(sys.executable).with_name("ifctl"))


def ifctl(*args: str, home: Path, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "IF_BUS_URL"}
    full_env["IF_HOME"] = str(home)
    full_env.update(env or {})
    return subprocess.run([IFCTL, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def test_coordinator_lifecycle(tmp_path: Path) -> None:
    first = ifctl("coordinator", "start", "--json", home=tmp_path)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["started"] is True and pid_alive(info["pid"])
    try:
        again = ifctl("coordinator", "start", home=tmp_path)
        assert again.returncode == 0 and "already running" in again.stdout
        status = ifctl("coordinator", "status", "--json", home=tmp_path)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["healthy"] is True and report["pid"] == info["pid"]
        # A command given the URL explicitly reaches the same server.
        explicit = ifctl("--bus", info["url"], "coordinator", "status", home=tmp_path)
        assert explicit.returncode == 0 and "healthy" in explicit.stdout
    finally:
        stop = ifctl("coordinator", "stop", "--json", home=tmp_path)
    assert stop.returncode == 0 and json.loads(stop.stdout)["pid"] == info["pid"]
    assert not pid_alive(info["pid"])
    down = ifctl("coordinator", "status", home=tmp_path)
    assert down.returncode == 3 and "ifctl coordinator start" in down.stdout
    # data survives a stop and a restart
    assert (tmp_path / "nats" / "jetstream").is_dir()


def test_stop_only_ends_its_own_process(tmp_path: Path) -> None:
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "coordinator.json").write_text(json.dumps({
            "pid": decoy.pid, "port": 1, "monitor_port": 2, "url": "nats://127.0.0.1:1",
            "data_dir": str(tmp_path / "nats"), "started_at": 0,
        }))
        result = ifctl("coordinator", "stop", home=tmp_path)
        assert result.returncode == 0 and "not running" in result.stdout
        assert decoy.poll() is None, "stop signalled a process that is not our server"
    finally:
        decoy.kill()
        decoy.wait()


@pytest.mark.parametrize(
    ("bus", "code", "says"),
    [
        ("redis://localhost:6379", 2, "unknown bus URL scheme"),
        ("nats//localhost", 2, "malformed bus URL"),
        ("nats://localhost:4222?bogus=1", 2, "unknown option 'bogus'"),
        ("etcd://127.0.0.1:{port}", 3, "etcd"),
        ("nats://127.0.0.1:{port}", 3, "ifctl coordinator start"),
    ],
)
def test_bad_and_unreachable_bus_urls(tmp_path: Path, bus: str, code: int, says: str) -> None:
    result = ifctl("coordinator", "status", home=tmp_path,
                   env={"IF_BUS_URL": bus.format(port=free_port())})
    assert result.returncode == code, result
    assert says in result.stdout + result.stderr
    assert "Traceback" not in result.stderr



def _subcommands(group: click.Group) -> list[tuple[str, click.Command]]:
    """A group's commands, sorted, loading the root's lazy ones."""
    ctx = click.Context(group)
    found = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, command) for name, command in found if command is not None]

def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in _subcommands(group):
        path = (*prefix, name)
        out.append(path)
        if isinstance(command, click.Group):
            out.extend(_commands(command, path))
    return out


@pytest.mark.parametrize("path", [p for p in _commands(cli) if p not in PROTOCOL_COMMANDS],
                         ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example_and_the_contract_flags(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    command = cli
    for name in path:
        command = dict(_subcommands(command))[name]  # type: ignore[arg-type]
    if not isinstance(command, click.Group):
        for flag in ("--json", "--why", "--trace", "--mode"):
            assert flag in result.output, f"{' '.join(path)} lacks {flag}"


def test_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(cli, ["coordinator", "start", "--mode", "sideways"])
    assert result.exit_code == 2
    assert "sideways" in result.output
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2


def test_falsify_changes_nothing(tmp_path: Path) -> None:
    result = ifctl("coordinator", "start", "--mode=falsify", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "falsify" and {c["check"] for c in report["checks"]} >= {
        "nats-server binary", "state directory writable", "server"}
    assert not (tmp_path / "coordinator.json").exists()


def test_demo_works_the_seed_board_with_every_part(tmp_path: Path, nats_server: object) -> None:
    url = f"{nats_server.url}?namespace=demotest"  # type: ignore[attr-defined]
    result = ifctl("demo", "--json", home=tmp_path, env={"IF_BUS_URL": url}, timeout=150)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["completed"] == report["tasks"] == 54 and report["done_exactly_once"]
    assert report["killed"] and report["reclaimed_by"] not in (None, report["killed"])
    assert report["breakers_open"] == ["flaky-agent"] and 0 < report["waste"] < 0.1
    assert set(report["blocker"]["helpers"]) == {"session-3-h323", "session-4-sip"}
    assert report["claims"]["won"] >= 54 and report["witness"]["verified"]
    assert all(report["spend_micros"][s] > 0 for s in ("session-5-cli", "session-7-ifbus"))
    again = ifctl("demo", "--swarms", "2", "--tasks", "6", "--no-kill", "--json", home=tmp_path,
                  env={"IF_BUS_URL": url})  # replaces what the first run left
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["tasks"] <= 6
    board = ifctl("board", "show", "--json", home=tmp_path, env={"IF_BUS_URL": url})
    assert board.returncode == 0 and len(json.loads(board.stdout)["tasks"]) <= 6
    other = f"{nats_server.url}?namespace=demo-other"  # type: ignore[attr-defined]
    assert ifctl("task", "create", "X1", "--title", "real work", home=tmp_path,
                 env={"IF_BUS_URL": other}).returncode == 0
    refused = ifctl("demo", "--tasks", "3", home=tmp_path, env={"IF_BUS_URL": other})
    assert refused.returncode == 2 and "already holds other work" in refused.stderr
