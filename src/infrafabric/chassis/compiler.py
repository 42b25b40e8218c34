"""Compiling untrusted modules in a bounded process.

Compiling WebAssembly to machine code is not bounded by the run's limits: the
guest's memory cap, fuel and deadline apply once it runs, but Cranelift's cost
grows with the code, and a hostile module of 3 MB made of many small functions
took 748 MB and 7.8 s to compile, in the agent's own process, under
``--memory-mb 16 --timeout 2``. So a :class:`~infrafabric.chassis.sandbox.Sandbox`
compiles a module it has not compiled before in a child process
(:func:`main`) with

* ``RLIMIT_AS`` at :attr:`~infrafabric.chassis.models.CompileLimits.memory_mb` (the interpreter and
  wasmtime take about 45 MiB of it before compiling starts) and glibc held to
  two malloc arenas, so the address space measures the compiler's real use;
* a wall clock of :attr:`~infrafabric.chassis.models.CompileLimits.timeout_seconds` kept by the parent,
  which kills the child, and ``RLIMIT_CPU`` as a backstop;
* a clean environment and ``/`` as working directory.

The child sends back the serialized module, which the parent loads with
``wasmtime.Module.deserialize`` (the same engine configuration on both
sides: :func:`engine_config`). A module that
needs more is refused with :class:`~infrafabric.errors.ModuleLoadError`
(exit 2) naming the limit, and the agent's process never pays for it.

Small modules (at most :attr:`~infrafabric.chassis.models.CompileLimits.inline_bytes`, 64 KiB by
default) compile in-process: the process start (about 0.3 s) would cost more
than the compile, and the worst shapes measured at that size stay under a
second and 60 MB. Modules the host trusts by digest (the pinned Python and
JavaScript runtimes) also compile in-process.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import wasmtime

from infrafabric.chassis.models import CompileLimits
from infrafabric.errors import ModuleLoadError

__all__ = ["compile_in_worker", "engine_config", "main"]

# the child's exit status for "wasmtime refused the module" (its message on stderr)
_INVALID = 3
# the child's stderr, at most this much of it, goes into an error message
_STDERR_SHOWN = 400
_CHILD = "import sys; from infrafabric.chassis.compiler import main; sys.exit(main())"


def engine_config(*, compact_memory: bool, fuel: bool, epoch: bool = True) -> wasmtime.Config:
    """The engine configuration of a sandbox: epoch interruption always (the
    wall clock and the CPU share), fuel metering only for runs that ask for an
    instruction budget (``fuel``: it instruments every basic block);
    ``compact_memory`` reserves only the address space linear memory uses (see
    :class:`~infrafabric.chassis.sandbox.Sandbox`). A module serialized by one
    engine loads only into an engine configured the same way. ``epoch`` off
    compiles no check at all, for a worker process stopped from outside."""
    config = wasmtime.Config()
    config.consume_fuel = fuel
    config.epoch_interruption = epoch
    if compact_memory:
        config.memory_reservation = 0
        config.memory_guard_size = 0
        config.memory_reservation_for_growth = 0
        config.memory_may_move = True
    return config


def compile_in_worker(source: bytes | str, *, name: str, compact_memory: bool, fuel: bool,
                      limits: CompileLimits, epoch: bool = True, python: str = sys.executable) -> bytes:
    """Compile ``source`` (wasm bytes or WAT text) in a bounded child process and
    return the serialized module, for ``wasmtime.Module.deserialize`` on an
    engine built by ``engine_config(compact_memory=..., fuel=...)``.

    :raises ModuleLoadError: the module is invalid (wasmtime's message), or
        compiling it needs more memory or time than ``limits`` allow.
    """
    wat = isinstance(source, str)
    data = source.encode("utf-8") if isinstance(source, str) else source
    # not ``-m``: the package imports this module first, and runpy warns about that on stderr
    argv = [python, "-c", _CHILD, str(limits.memory_mb * 1024 * 1024), str(limits.timeout_seconds)]
    if compact_memory:
        argv.append("--compact")
    if fuel:
        argv.append("--fuel")
    if not epoch:
        argv.append("--no-epoch")
    if wat:
        argv.append("--wat")
    env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "2",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd="/", close_fds=True)
    except OSError as exc:
        raise ModuleLoadError(f"module {name!r}: cannot start the compiler process: {exc}") from exc
    try:
        out, err = proc.communicate(data, timeout=limits.timeout_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ModuleLoadError(
            f"module {name!r} takes more than {limits.timeout_seconds:g} s to compile",
            hint="a module this costly to compile is refused; raise the compile limits "
                 "(ifctl chassis run --compile-timeout) only for code you trust") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    detail = " ".join(err.decode("utf-8", "replace").split())[:_STDERR_SHOWN]
    if proc.returncode == 0:
        return out
    if proc.returncode == _INVALID:
        raise ModuleLoadError(f"module {name!r}: {detail}")
    if proc.returncode == -signal.SIGXCPU:
        raise ModuleLoadError(f"module {name!r} takes more than {limits.timeout_seconds:g} s of CPU "
                              "to compile")
    # out of address space: Rust aborts ("memory allocation of N bytes failed"), Python raises MemoryError
    raise ModuleLoadError(
        f"module {name!r} needs more than {limits.memory_mb:,} MiB to compile "
        f"(the compiler process {_how_it_ended(proc.returncode)})",
        hint="a module this costly to compile is refused; raise the compile limits "
             "(ifctl chassis run --compile-memory-mb) only for code you trust")


def _how_it_ended(code: int) -> str:
    if code < 0:
        with_name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"was killed by {with_name}"
    return f"exited with status {code}"


def _apply_limits(address_space: int, timeout_s: float) -> None:
    import resource

    cpu = math.ceil(timeout_s * max(os.cpu_count() or 1, 1)) + 1  # every compile thread counts
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point, with arguments ``ADDRESS_SPACE TIMEOUT [--compact]
    [--fuel] [--no-epoch] [--wat]``: the module on stdin, the serialized module on stdout, a
    refusal's reason on stderr (exit 3)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or any(a not in ("--compact", "--fuel", "--no-epoch", "--wat") for a in args[2:]):
        print("usage: compiler ADDRESS_SPACE TIMEOUT [--compact] [--fuel] [--no-epoch] [--wat]",
              file=sys.stderr)
        return 2
    _apply_limits(int(args[0]), float(args[1]))
    data = sys.stdin.buffer.read()
    try:
        engine = wasmtime.Engine(engine_config(compact_memory="--compact" in args, fuel="--fuel" in args,
                                                 epoch="--no-epoch" not in args))
        module = wasmtime.Module(engine, data.decode("utf-8") if "--wat" in args else data)
        payload = bytes(module.serialize())
    except UnicodeDecodeError:
        print("WAT text that is not UTF-8", file=sys.stderr)
        return _INVALID
    except wasmtime.WasmtimeError as exc:
        what = "invalid WAT" if "--wat" in args else "malformed or truncated wasm"
        print(f"{what}: {exc}", file=sys.stderr)
        return _INVALID
    sys.stdout.buffer.write(payload)
    sys.stdout.buffer.flush()
    return 0

