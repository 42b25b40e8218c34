"""The command line's persisted connection (infrafabric.agent.persist), with real
``ifctl`` processes on real engines: the first ``ifctl task heartbeat`` with no
agent server acts itself and leaves a connection behind; the next ones go
through it without loading the library; it answers only commands with its own
settings, only heartbeats, renews nothing by itself, and goes when idle, when
its socket goes, or when its bus fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from infrafabric.agent.control import _round_trip, persist_seconds, persist_socket
from infrafabric.agent.persist import spawn
from infrafabric.bus import connect
from infrafabric.bus.servers import NatsServer
from infrafabric.fleet import Fleet, assemble
from support import IFCTL, ifctl_modules, persist_helpers, top_modules

LIBRARY = {"pydantic", "nats", "aetcd", "asyncio", "rich", "click"}


def _env(url: str, home: Path, **more: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
        "IF_BUS_URL": url, "IF_HOME": str(home), "IF_SWARM_ID": "agent-1", **more}


def _until(condition: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    """Wait for ``condition`` (a process starting or going is not instant), failing after ``deadline``."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:g} s: {what}")
        time.sleep(0.05)


def _socket(env: dict[str, str]) -> Path:
    path = persist_socket(env["IF_HOME"], env)
    assert path is not None
    return path


async def _claim(url: str, lease: float = 600) -> tuple[Fleet, str]:
    bus = await connect(url)
    fleet = assemble(bus, signer=None)
    await fleet.coordinator.create_tasks([{"id": "T1", "title": "first"}])
    await fleet.register_swarm("agent-1", [])
    claim = await fleet.coordinator.try_claim("agent-1", "T1", lease_ttl=lease)
    assert claim.won and claim.claim_id
    return fleet, claim.claim_id


@pytest.fixture
async def claimed(engine_url: str) -> AsyncIterator[tuple[Fleet, str]]:
    fleet, claim_id = await _claim(engine_url)
    try:
        yield fleet, claim_id
    finally:
        await fleet.bus.close()


async def test_the_first_heartbeat_leaves_a_connection_the_next_ones_use(
        claimed: tuple[Fleet, str], engine_url: str, tmp_path: Path) -> None:
    fleet, claim_id = claimed
    env = _env(engine_url, tmp_path)
    beat = ["task", "heartbeat", "T1", "--claim", claim_id]
    # the first acts itself (the library loaded), then leaves the connection behind
    modules, _, _ = ifctl_modules([*beat, "--json"], env)
    assert "pydantic" in top_modules(modules)
    sock = _socket(env)
    _until(sock.exists, "the persisted connection listens")
    [helper] = persist_helpers(tmp_path)
    # it holds no worktree it was started from: its working directory is the state directory
    assert os.readlink(f"/proc/{helper}/cwd") == str(tmp_path)
    # the next: no library, the lease renewed on the bus to --lease, the full command's fields
    modules, out, _ = ifctl_modules([*beat, "--lease", "900", "--json"], env)
    assert not top_modules(modules) & LIBRARY
    answer = json.loads(out)
    task = await fleet.coordinator.get_task("T1")
    assert task is not None and task.lease_until == pytest.approx(answer["lease_until"])
    assert answer["lease_left_s"] == pytest.approx(900, abs=5)
    assert set(answer) == {"task_id", "lease_until", "lease_left_s", "exit_code"}
    # four processes at once through it: each renews
    racers = [subprocess.Popen([IFCTL, *beat, "--json"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=60) for p in racers]
    assert [p.returncode for p in racers] == [0, 0, 0, 0], outputs
    assert all(json.loads(o)["lease_left_s"] > 800 for o, _ in outputs)
    # a stale token: it refuses, and the full command says why, exit 1
    _, _, err = ifctl_modules(["task", "heartbeat", "T1", "--claim", "0123456789abcdef"], env, code=1)
    assert "stale" in err, err
    # another bus is another connection: this one does not act on its own bus for it
    other = env | {"IF_BUS_URL": engine_url.replace("namespace=", "namespace=other")}
    assert _socket(other) != sock
    _, _, err = ifctl_modules(beat, other, code=2)
    assert "no task 'T1'" in err, err
    # it renews nothing by itself: the lease stands where the last heartbeat put it
    before = await fleet.coordinator.get_task("T1")
    time.sleep(1.5)  # past a tick of its loop
    after = await fleet.coordinator.get_task("T1")
    assert before is not None and after is not None
    assert (after.lease_until, len(after.history)) == (before.lease_until, len(before.history))
    assert persist_helpers(tmp_path) == [helper]
    # `ifctl coordinator stop` closes it (its socket goes, as with a state directory deleted)
    stopped = subprocess.run([IFCTL, "coordinator", "stop", "--json"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["persisted_closed"] == 1, stopped.stderr
    assert not sock.exists()
    _until(lambda: not persist_helpers(tmp_path), "the connection exits once its socket is gone")


async def test_a_race_to_leave_one_leaves_one(nats_server: NatsServer, namespace: str,
                                              tmp_path: Path) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    fleet, claim_id = await _claim(url)
    try:
        env = _env(url, tmp_path)
        racers = [subprocess.Popen([IFCTL, "task", "heartbeat", "T1", "--claim", claim_id], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(4)]
        outputs = [p.communicate(timeout=60) for p in racers]
        assert [p.returncode for p in racers] == [0, 0, 0, 0], outputs
        _until(_socket(env).exists, "the persisted connection listens")
        _until(lambda: len(persist_helpers(tmp_path)) == 1, "the losers of the race exit")
        modules, _, _ = ifctl_modules(["task", "heartbeat", "T1", "--claim", claim_id], env)
        assert not top_modules(modules) & LIBRARY
        # killed outright, it leaves its socket: the next heartbeat acts itself and starts another
        [killed] = persist_helpers(tmp_path)
        os.kill(killed, signal.SIGKILL)
        _until(lambda: not persist_helpers(tmp_path), "the killed connection is gone")
        assert _socket(env).exists()
        modules, _, _ = ifctl_modules(["task", "heartbeat", "T1", "--claim", claim_id], env)
        assert "pydantic" in top_modules(modules)
        # `ifctl coordinator stop` counts the connections running, not the sockets left
        _until(lambda: len(persist_helpers(tmp_path)) == 1, "a fresh connection starts")
        os.kill(persist_helpers(tmp_path)[0], signal.SIGKILL)
        _until(lambda: not persist_helpers(tmp_path), "the killed connection is gone")
        stopped = subprocess.run([IFCTL, "coordinator", "stop", "--json"], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert json.loads(stopped.stdout)["persisted_closed"] == 0 and not _socket(env).exists()
        modules, _, _ = ifctl_modules(["task", "heartbeat", "T1", "--claim", claim_id], env)
        assert "pydantic" in top_modules(modules)
        _until(lambda: len(persist_helpers(tmp_path)) == 1, "a fresh connection starts")
        _until(lambda: not top_modules(ifctl_modules(["task", "heartbeat", "T1", "--claim", claim_id],
                                                     env)[0]) & LIBRARY, "the fresh connection answers")
    finally:
        await fleet.bus.close()


async def test_it_goes_when_idle_and_when_its_bus_fails(namespace: str, tmp_path: Path) -> None:
    with NatsServer() as server:
        url = f"{server.url}?namespace={namespace}"
        fleet, claim_id = await _claim(url)
        try:
            beat = [IFCTL, "task", "heartbeat", "T1", "--claim", claim_id]
            # IF_PERSIST=1: gone a second after its last request
            idle = _env(url, tmp_path / "idle", IF_PERSIST="1")
            assert subprocess.run(beat, env=idle, capture_output=True, timeout=60).returncode == 0
            _until(lambda: bool(persist_helpers(tmp_path / "idle")), "the persisted connection starts")
            _until(lambda: not persist_helpers(tmp_path / "idle"), "an idle connection exits")
            assert not _socket(idle).exists()
            # the default: it stays, until a request the bus fails
            env = _env(url, tmp_path)
            assert subprocess.run(beat, env=env, capture_output=True, timeout=60).returncode == 0
            _until(_socket(env).exists, "the persisted connection listens")
        finally:
            await fleet.bus.close()
    # the bus is gone: the connection cannot renew, the command acts itself and says so (exit 3)
    done = subprocess.run(beat, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    _until(lambda: not persist_helpers(tmp_path), "a connection whose bus failed exits")


@pytest.mark.parametrize("engine_url", ["nats"], indirect=True)  # the connection: on both, above
async def test_turned_off_or_misset(claimed: tuple[Fleet, str], engine_url: str, tmp_path: Path) -> None:
    fleet, claim_id = claimed
    beat = [IFCTL, "task", "heartbeat", "T1", "--claim", claim_id]
    off = _env(engine_url, tmp_path, IF_PERSIST="0")
    assert subprocess.run(beat, env=off, capture_output=True, timeout=60).returncode == 0
    assert persist_socket(off["IF_HOME"], off) is None
    time.sleep(1.0)  # what a spawned process would need to show up
    assert not persist_helpers(tmp_path) and not (tmp_path / "agents").exists()
    before = await fleet.coordinator.get_task("T1")
    for value in ("abc", "-1", "nan", "inf"):
        done = subprocess.run(beat, env=off | {"IF_PERSIST": value}, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and f"IF_PERSIST={value!r} is not a number of seconds" in done.stderr, \
            done.stderr
        assert "Traceback" not in done.stderr
    after = await fleet.coordinator.get_task("T1")
    assert after is not None and before is not None and after.lease_until == before.lease_until


def test_settings_name_the_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"IF_BUS_URL": "nats://127.0.0.1:4222", "IF_BUS_PASSWORD": "hunter2", "IF_HOME": str(tmp_path)}

    def path(**more: str) -> Path | None:
        return persist_socket(str(tmp_path), base | more)

    # named with the state directory's own key: none yet, none there; the key is the user's only
    assert path() is None
    here = persist_socket(str(tmp_path), base, create=True)
    assert here is not None and here == path() and here.parent == tmp_path / "agents"
    key = tmp_path / "agents" / "persist.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and len(key.read_bytes()) == 32
    # the same settings in another state directory: another key, another name (a name in a
    # process list cannot be checked against guessed passwords without the key)
    elsewhere = persist_socket(str(tmp_path / "other"), base, create=True)
    assert elsewhere is not None and elsewhere.name != here.name
    # a damaged key is replaced when a connection is next left behind
    key.write_bytes(b"short")
    assert path() is None
    here = persist_socket(str(tmp_path), base, create=True)
    assert here is not None and here == path() and len(key.read_bytes()) == 32
    # what does not decide the bus or the credentials does not matter
    assert path(IF_SWARM_ID="x") == path(IF_PERSIST="30") == path(IF_DEBUG="1") == here
    # what does, does
    assert len({here, path(IF_BUS_USER="bob"), path(IF_BUS_PASSWORD="p"), path(IF_BUS_TLS="1"),
                path(IF_BUS_URL="nats://127.0.0.1:4223"), path(IF_BUS_CREDS="/etc/a.creds")}) == 6
    # a relative path means another file from another directory
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    seen = set()
    for d in ("a", "b"):
        monkeypatch.chdir(tmp_path / d)
        seen.add((path(IF_BUS_TLS_CA="ca.pem"), path(IF_BUS_TLS_CA="/etc/ca.pem"),
                  path(IF_BUS_URL="nats://h:1?tls_ca=ca.pem"), path(IF_BUS_URL="nats://h:1?tls_ca=/ca.pem")))
    (a_rel, a_abs, a_url, a_absurl), (b_rel, b_abs, b_url, b_absurl) = sorted(seen, key=str)
    assert a_rel != b_rel and a_url != b_url and (a_abs, a_absurl) == (b_abs, b_absurl)
    # off
    assert persist_seconds({}) == 600 and persist_seconds({"IF_PERSIST": "2.5"}) == 2.5
    for value in ("0", "abc", "-1", "nan", "inf"):
        assert path(IF_PERSIST=value) is None
        if value != "0":
            with pytest.raises(ValueError, match="IF_PERSIST"):
                persist_seconds({"IF_PERSIST": value}, strict=True)


@pytest.mark.parametrize("engine_url", ["nats"], indirect=True)  # the connection: on both, above
async def test_it_answers_heartbeats_only(claimed: tuple[Fleet, str], engine_url: str,
                                          tmp_path: Path) -> None:
    fleet, claim_id = claimed
    env = _env(engine_url, tmp_path)
    assert subprocess.run([IFCTL, "task", "heartbeat", "T1", "--claim", claim_id], env=env,
                          capture_output=True, timeout=60).returncode == 0
    sock = _socket(env)
    _until(sock.exists, "the persisted connection listens")
    before = await fleet.coordinator.get_task("T1")

    def ask(line: bytes) -> dict[str, object]:
        return _round_trip(sock, line + b"\n")  # as the command's client sends it

    beat = {"op": "heartbeat", "swarm_id": "agent-1", "task_id": "T1", "claim_id": claim_id,
            "bus": engine_url}
    for bad, says in ((b"not json", "bad request"), (b"[1]", "bad request"),
                      (json.dumps({**beat, "op": "stop"}).encode(), "is not heartbeat"),
                      (json.dumps({**beat, "swarm_id": None}).encode(), "needs swarm_id"),
                      (json.dumps({**beat, "swarm_id": "../x"}).encode(), "is not an id"),
                      (json.dumps({**beat, "bus": None}).encode(), "this server's bus is"),
                      (json.dumps({**beat, "lease_ttl": "9"}).encode(), "lease_ttl must be")):
        answer = ask(bad)
        assert answer["ok"] is False and says in str(answer["error"]), (bad, answer)
    after = await fleet.coordinator.get_task("T1")
    assert before is not None and after is not None and after.lease_until == before.lease_until
    good = ask(json.dumps(beat).encode())
    assert good["ok"] is True and isinstance(good["lease_until"], float)
    assert oct((tmp_path / "agents").stat().st_mode & 0o777) == "0o700"
    assert oct(sock.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("engine_url", ["nats"], indirect=True)  # the connection: on both, above
async def test_it_lives_an_hour_at_most(claimed: tuple[Fleet, str], engine_url: str, tmp_path: Path) -> None:
    """Busy or not, it exits MAX_LIFE after it started (here 2 s), so that the
    next heartbeat starts one running the code installed since."""
    _, claim_id = claimed
    env = _env(engine_url, tmp_path)
    sock = persist_socket(env["IF_HOME"], env, create=True)
    assert sock is not None
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "infrafabric.agent.persist", str(sock),
                             "--home", str(tmp_path), "--idle", "600", "--max-life", "2"], env=env)
    try:
        _until(sock.exists, "the persisted connection listens")
        modules, _, _ = ifctl_modules(["task", "heartbeat", "T1", "--claim", claim_id], env)
        assert not top_modules(modules) & LIBRARY  # it answers
        while proc.poll() is None:  # a heartbeat every few hundred ms: never idle
            ifctl_modules(["task", "heartbeat", "T1", "--claim", claim_id], env)
            if time.monotonic() - started > 60:
                raise AssertionError("the connection outlived its --max-life")
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()


def test_one_that_failed_is_not_started_again_at_once(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that cannot start (here: no bus at that address) says why
    in its log, and the next heartbeats do not start another for a minute."""
    for name in [k for k in os.environ if k.startswith("IF_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IF_HOME", str(tmp_path))
    monkeypatch.setenv("IF_BUS_URL", "nats://127.0.0.1:9?timeout=1")
    sock = spawn()
    assert sock is not None
    log = sock.with_suffix(".log")
    _until(lambda: not persist_helpers(tmp_path) and log.stat().st_size > 0,
           "the connection fails and says why")
    assert "the persisted connection at" in log.read_text()
    assert spawn() is None  # within the minute: none started
    time.sleep(1.0)
    assert not persist_helpers(tmp_path)
    os.utime(log, (time.time() - 120, time.time() - 120))
    assert spawn() == sock  # a minute later, another try
    _until(lambda: not persist_helpers(tmp_path), "it fails again")
