"""The CLI contract (DESIGN.md, "The CLI contract") on every command of the tree.

Every leaf command, found by walking ``infrafabric.cli.cli``: takes ``--json``,
``--why``, ``--trace`` and ``--mode=falsify``; its ``--help`` exits 0 with an
example; a bogus flag exits 2 without a traceback; ``--mode=falsify`` (with
the sample arguments of :data:`SAMPLES`, on a real NATS bus seeded with a
board, swarms, a loaded chassis module and a credential) exits 0 or 1, says
``would_fail`` accordingly, gives its reasons and changes nothing: the bus
namespace (every key, revision and value), the state directory and the
compile cache are the same afterwards. Bus commands given an unreachable bus
exit 3 with a message and no traceback. A few commands run as real
subprocesses, the rest through click's runner.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from infrafabric.bus import connect
from infrafabric.bus.servers import NatsServer, free_port
from infrafabric.cli import cli
from support import CONTRACT, PROTOCOL_COMMANDS

IFCTL = str(Path(sys.executable).with_name("ifctl"))
WAT = Path(__file__).parent / "chassis" / "wat"
CONTRACT_FLAGS = ("--json", "--why", "--trace", "--mode")

BOARD = """\
version: 1
tasks:
  - {id: N1, title: New one, capabilities: [code-analysis:python]}
  - {id: N2, title: New two, dependencies: [N1]}
"""

POLICY = """\
resource_policy:
  max_swarms_per_task: 2
  max_cost_per_task: "5.00"
  min_capability_match: 0.5
  circuit_breaker_failure_threshold: 4
"""



def _subcommands(group: click.Group) -> list[tuple[str, click.Command]]:
    """A group's commands, sorted, loading the root's lazy ones."""
    ctx = click.Context(group)
    found = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, command) for name, command in found if command is not None]

def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, sub in _subcommands(group):
        if isinstance(sub, click.Group):
            yield from _leaves(sub, (*path, name))
        else:
            yield " ".join((*path, name)), sub


LEAVES: dict[str, click.Command] = {name: c for name, c in _leaves(cli)
                                    if tuple(name.split()) not in PROTOCOL_COMMANDS}


def _groups(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[str]:
    yield " ".join(path)
    for name, sub in _subcommands(group):
        if isinstance(sub, click.Group):
            yield from _groups(sub, (*path, name))


GROUPS = list(_groups(cli))

#: sample arguments of every leaf command for --mode=falsify ({...} from the seeded world)
SAMPLES: dict[str, str] = {
    "bench all": "--quick",
    "bench bus": "--n 100",
    "bench chassis": "--no-python",
    "bench coordinator": "--n 100",
    "bench gateway": "--n 3 --agents 1",
    "bench hooks": "--n 3 --tasks 5",
    "bench startup": "--n 3",
    "bench scale": "--quick --n 3 --tasks 10",
    "bench waste": "--tasks 20",
    "bench witness": "--n 100 --verify-entries 1000",
    "blocker report": "--swarm alpha --task P2 --message 'needs P1'",
    "board export": "--format yaml",
    "board import": "{board}",
    "board import-status": "{status}",
    "board show": "",
    "chassis creds issue": "coder T9 --ttl 60 --endpoint 'search/*'",
    "chassis creds list": "--all",
    "chassis creds revoke": "{cred}",
    "chassis exec": "coder --input 0 --task-id T5",
    "chassis load": "coder {echo_wat} --contract {contract}",  # a module not compiled before
    "chassis reputation": "coder --recompute",
    "chassis run": "{hello_wat} --arg x",
    "chassis setup": "--runtime js",
    "chassis slo": "coder --p99-ms 800 --success-rate 0.4",  # would clear the recorded violation
    "coordinator add-agent": "laptop --swarm alpha --cap docs:markdown --out {work}/laptop.env",
    "coordinator revoke-agent": "alpha-laptop",
    "coordinator start": "",
    "coordinator status": "",
    "coordinator stop": "",
    "cost budget": "--csv {work}/budgets.csv",
    "cost history": "--swarm alpha --since 1h --csv {work}/history.csv",
    "cost report": "--by swarm",
    "cost track": "alpha review 0.25 --task P1 --model haiku",
    "demo": "",
    "doctor": "--repair --by alice",
    "events watch": "--count 1",
    "mcp config": "--agent codex --swarm alpha --cap code-analysis:python",
    "mcp token issue": "alpha --name alpha-laptop",
    "mcp token list": "",
    "mcp token revoke": "alpha-laptop",
    "governor match": "code-analysis:python --max-cost 5",
    "hooks install": "--agent claude --user",
    "guard pre-commit": "--swarm alpha",
    "guard install": "--swarm alpha",
    "governor policy": "{policy}",
    "governor register": "beta --cap code-analysis:rust --cost-per-hour 1 --budget 3",
    "governor reset-circuit-breaker": "alpha --budget 20 --by alice",
    "governor status": "alpha",
    "governor trip": "alpha --reason 'looping' --by alice",
    "swarm list": "",
    "swarm register": "gamma --cap docs:markdown",
    "swarm spawn": "delta --path {work} --budget 2",
    "task claim": "P1 --swarm alpha",
    "task complete": "P1 --swarm alpha --claim {claim} --result '{{\"ok\": true}}'",
    "task create": "P3 --title Three --dep P2 --cap code-analysis:python",
    "task fail": "P1 --swarm alpha --claim {claim} --error 'tests red'",
    "task heartbeat": "P1 --swarm alpha --claim {claim}",
    "task next": "--swarm alpha",
    "task release": "P1 --swarm alpha --claim {claim} --reason 'needs GPU'",
    "task reopen": "P1 --by alice --reason 'fixed'",
    "task show": "P1",
    "witness checkpoint": "--out {work}/head.checkpoint",
    "witness query": "--component IF.coordinator --limit 5",
    "witness trace": "{trace}",
    "witness verify": "",
    "web": "--port 0",
}
for _name in ("budget", "history", "report", "track"):
    SAMPLES[f"optimise {_name}"] = SAMPLES[f"cost {_name}"]

#: commands that work on the bus: with an unreachable one they exit 3
UNREACHABLE = ["web --port 0", "board show", "task show P1", "task claim P1 --swarm alpha", "swarm list",
               "swarm register gamma", "governor status", "cost report", "witness verify",
               "witness query", "chassis creds list", "coordinator status", "events watch --count 1",
               "task create P9 --title x", "blocker report --swarm a --message m"]


@dataclass
class World:
    """A seeded namespace on the session's NATS server, and the files the samples name."""

    url: str
    home: Path
    work: Path
    cache: Path
    values: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"IF_BUS_URL": self.url, "IF_HOME": str(self.home), "IF_CACHE_DIR": str(self.cache),
                "USER": "alice"}

    def invoke(self, args: list[str]) -> Result:
        return CliRunner().invoke(cli, args, env=self.env, catch_exceptions=False)

    def ok(self, line: str) -> Any:
        result = self.invoke(shlex.split(line))
        assert result.exit_code == 0, (line, result.output, result.stderr)
        return json.loads(result.stdout) if result.stdout.startswith("{") else result.stdout

    def args(self, name: str) -> list[str]:
        return [*name.split(), *shlex.split(SAMPLES[name].format(**self.values))]

    def snapshot(self) -> dict[str, Any]:
        """Everything falsify must leave alone: every key of the namespace (with its
        revision and value), and the files of the state directory and the cache."""
        async def keys() -> dict[str, tuple[int, bytes]]:
            async with connect(self.url) as bus:
                return {e.key: (e.revision, e.value) for e in await bus.list("")}

        files = {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
                 for root in (self.home, self.cache, self.work) for p in sorted(root.rglob("*"))}
        return {"bus": asyncio.run(keys()), "files": files}


@pytest.fixture(scope="module")
def world(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("contract")
    w = World(url=f"{nats_server.url}?namespace=contract{os.getpid()}", home=base / "home",
              work=base / "work", cache=base / "cache")
    for d in (w.home, w.work, w.cache):
        d.mkdir()
    (w.work / "coder.yaml").write_text(CONTRACT)
    (w.work / "board.yaml").write_text(BOARD)
    (w.work / "STATUS-SESSION-9.yaml").write_text("session: session-9\ncompleted: P2\n")
    (w.work / "policy.yaml").write_text(POLICY)
    (w.work / "pyproject.toml").write_text("[project]\nname = 'delta'\n")
    w.values.update(work=str(w.work), wat=str(WAT / "task_audit.wat"), echo_wat=str(WAT / "task_echo.wat"),
                    hello_wat=str(WAT / "cmd_hello.wat"), contract=str(w.work / "coder.yaml"),
                    board=str(w.work / "board.yaml"), policy=str(w.work / "policy.yaml"),
                    status=str(w.work / "STATUS-SESSION-9.yaml"))
    w.ok("governor register alpha --cap code-analysis:python --cost-per-hour 2 --budget 10")
    w.ok("task create P1 --title One --cap code-analysis:python")
    w.ok("task create P2 --title Two --dep P1")
    claimed = w.ok("task claim P1 --swarm alpha --json --trace")
    w.values.update(claim=claimed["claim_id"], trace=claimed["trace_id"])
    w.ok(f"chassis load coder {w.values['wat']} --contract {w.values['contract']}")
    w.ok("chassis exec coder --input 0 --task-id T1")
    trapped = w.invoke(shlex.split("chassis exec coder --input 1 --task-id T2"))  # out of fuel: 1 of 2 ok
    assert trapped.exit_code == 1, trapped.output
    assert w.invoke(shlex.split("chassis slo coder")).exit_code == 1  # the violation is recorded
    w.values["cred"] = w.ok("chassis creds issue coder T1 --ttl 600 --endpoint search/* --json")["id"]
    w.ok("cost track alpha review 0.10 --task P1")
    return w


def test_every_command_has_sample_arguments() -> None:
    assert sorted(LEAVES) == sorted(SAMPLES), "add the new command to SAMPLES (and check its contract)"


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_flags_help_and_bad_usage(name: str) -> None:
    command = LEAVES[name]
    options = {opt: p for p in command.params for opt in getattr(p, "opts", [])}
    assert set(CONTRACT_FLAGS) <= set(options), f"{name} lacks a contract flag"
    mode = options["--mode"]
    assert isinstance(mode.type, click.Choice) and "falsify" in mode.type.choices
    runner = CliRunner()
    helped = runner.invoke(cli, [*name.split(), "--help"])
    assert helped.exit_code == 0, helped.output
    assert "Example" in helped.output, f"{name} --help has no example"
    for flag in CONTRACT_FLAGS:
        assert flag in helped.output
    bogus = runner.invoke(cli, [*name.split(), "--no-such-flag"])
    assert bogus.exit_code == 2, bogus.output
    assert "No such option" in bogus.output and "Traceback" not in bogus.output
    assert bogus.exception is None or isinstance(bogus.exception, SystemExit)
    bad_mode = runner.invoke(cli, [*name.split(), "--mode=dry"])
    assert bad_mode.exit_code == 2 and "Traceback" not in bad_mode.output


@pytest.mark.parametrize("name", GROUPS)
def test_every_group_has_help_with_examples(name: str) -> None:
    helped = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert helped.exit_code == 0 and "Example" in helped.output, (name, helped.output)


def _falsify(world: World, name: str, *extra: str) -> tuple[Result, dict[str, Any], dict[str, Any]]:
    before = world.snapshot()
    result = world.invoke([*world.args(name), "--mode=falsify", *extra])
    after = world.snapshot()
    return result, before, after


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_falsify_changes_nothing_and_reports(world: World, name: str) -> None:
    result, before, after = _falsify(world, name, "--json", "--why", "--trace")
    output = result.output + result.stderr
    assert "Traceback" not in output and "internal error" not in output, output
    assert result.exit_code in (0, 1), output
    assert after["bus"] == before["bus"], f"{name} --mode=falsify changed the bus"
    assert after["files"] == before["files"], f"{name} --mode=falsify changed a file"
    report = json.loads(result.stdout)
    assert report["mode"] == "falsify"
    assert report["would_fail"] is (result.exit_code == 1)
    assert report["exit_code"] == result.exit_code
    assert report["why"], f"{name} --mode=falsify --why gives no reasons"
    assert report["witness_entries"] == [] and report["trace_id"]


@pytest.mark.parametrize("name", ["board import", "task claim", "governor trip", "chassis load",
                                  "cost track", "witness verify", "chassis run", "bench all"])
def test_falsify_for_humans(world: World, name: str) -> None:
    result, before, after = _falsify(world, name, "--why", "--trace")
    assert result.exit_code in (0, 1) and "Traceback" not in result.output
    assert after == before
    assert "why:" in result.stdout and "witness entries written" in result.stdout


def test_falsify_reports_what_would_fail(world: World) -> None:
    """Falsify evaluates the real preconditions: these would fail, and say why."""
    cases = {
        "task claim P2 --swarm alpha": "P1",  # P2 waits on P1
        "task heartbeat P1 --swarm nobody": "nobody",
        "task create P1 --title again": "already exists",
        "chassis exec ghost": "ghost",
        "chassis creds revoke 0123456789abcdef": "credential",
        "governor status ghost": "ghost",
        "witness trace no-such-trace": "no-such-trace",
        "task show ghost": "ghost",
        "cost track ghost op 1": "ghost",
    }
    for line, says in cases.items():
        before = world.snapshot()
        result = world.invoke([*shlex.split(line), "--mode=falsify", "--json"])
        assert result.exit_code == 1, (line, result.output)
        report = json.loads(result.stdout)
        assert report["would_fail"] is True, line
        assert says in json.dumps(report), (line, report)
        assert world.snapshot() == before


@pytest.mark.parametrize("line", UNREACHABLE)
def test_unreachable_bus_exits_3(line: str, tmp_path: Path) -> None:
    env = {"IF_BUS_URL": f"nats://127.0.0.1:{free_port()}", "IF_HOME": str(tmp_path)}
    result = CliRunner().invoke(cli, shlex.split(line), env=env)
    assert result.exit_code == 3, (line, result.output)
    said = result.stdout + result.stderr
    assert "127.0.0.1" in said and "Traceback" not in said, said
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("line", ["board show", "task create P9 --title x", "governor status",
                                  "witness checkpoint", "chassis creds list", "cost report"])
def test_falsify_never_starts_the_embedded_coordinator(line: str, tmp_path: Path) -> None:
    """Without IF_BUS_URL a command starts the embedded coordinator; in falsify mode it
    must not (that would change something): the bus cannot be reached, exit 3."""
    result = CliRunner().invoke(cli, [*shlex.split(line), "--mode=falsify"],
                                env={"IF_BUS_URL": None, "IF_HOME": str(tmp_path / "home")})
    assert result.exit_code == 3, (line, result.output)
    assert "ifctl coordinator start" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "home" / "coordinator.json").exists()
    assert not (tmp_path / "home" / "nats").exists()


def _ifctl(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IFCTL, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **world.env}, cwd=world.work)


def test_as_real_processes(world: World) -> None:
    before = world.snapshot()
    dry = _ifctl(world, "task", "claim", "P2", "--swarm", "alpha", "--mode=falsify", "--json", "--why")
    assert dry.returncode == 1 and json.loads(dry.stdout)["would_fail"] is True, dry.stderr
    checks = _ifctl(world, "governor", "register", "beta", "--cap", "code-analysis:rust", "--cost-per-hour",
                    "1", "--mode=falsify")
    assert checks.returncode == 0 and "ok" in checks.stdout, checks.stderr
    assert world.snapshot() == before
    helped = _ifctl(world, "chassis", "creds", "issue", "--help")
    assert helped.returncode == 0 and "Example" in helped.stdout
    usage = _ifctl(world, "task", "claim", "P1")  # --swarm missing
    assert usage.returncode == 2 and "--swarm" in usage.stderr and "Traceback" not in usage.stderr
    down = subprocess.run([IFCTL, "board", "show"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **world.env, "IF_BUS_URL": f"nats://127.0.0.1:{free_port()}"})
    assert down.returncode == 3 and "error" in down.stderr and "Traceback" not in down.stderr


def test_trace_shows_the_entries_the_command_wrote(world: World) -> None:
    """--trace lists the witness entries of this command (its trace id), --why its reasons."""
    for line, operation in [("task create P7 --title Seven", "task_created"),
                            ("task claim P7 --swarm alpha", "task_claimed"),
                            ("governor trip alpha --reason test --by alice", "circuit_breaker_tripped"),
                            ("governor reset-circuit-breaker alpha --by alice", "circuit_breaker_reset"),
                            ("chassis creds issue coder T2 --endpoint search/x", None)]:
        report = world.ok(f"{line} --json --trace --why")
        entries = report["witness_entries"]
        assert entries, f"{line}: no witness entries in --trace"
        assert {e["trace_id"] for e in entries} == {report["trace_id"]}
        if operation is not None:
            assert operation in {e["operation"] for e in entries}, (line, entries)
        assert report["why"], f"{line}: --why gives no reasons"
    human = world.invoke(shlex.split("task show P7 --trace --why"))
    assert human.exit_code == 0 and "why:" in human.stdout and "0 witness entries written" in human.stdout


def test_text_from_the_bus_is_shown_as_text(world: World) -> None:
    """Titles, reasons and models come from users: a stray [/tag] in them is
    printed as it is, never an internal error."""
    world.ok("task create M1 --title '[/bold] odd [red' --description '[/b] too'")
    world.ok("governor register mm --cap docs:markdown --cost-per-hour 1 --model '[/m]'")
    world.ok("governor trip mm --reason '[/r]' --by '[/who]'")
    for line, says in [("task show M1", "[/bold] odd [red"), ("board show", "[/bold]"),
                       ("governor status", "[/m]"), ("governor status mm --why", "[/r]"),
                       ("cost budget", "[/r]")]:
        result = world.invoke([*shlex.split(line), *([] if "--why" in line else ["--why"])])
        assert result.exit_code == 0, (line, result.output)
        assert says in result.stdout and "internal error" not in result.output, (line, result.output)
    human = world.invoke(shlex.split("witness query --operation circuit_breaker_tripped --limit 1"))
    assert human.exit_code == 0 and "[/r]" in human.stdout
