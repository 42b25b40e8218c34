"""Run untrusted WebAssembly under limits: the chassis's sandbox.

One :class:`Sandbox` owns a wasmtime ``Engine`` with epoch interruption on, a
compiled-module cache (memory and disk) and a daemon thread that advances the
engine's epoch every millisecond while any run is in progress. Each run gets a
fresh ``Store`` carrying that run's limits:

* memory — ``Store.set_limits``: a ``memory.grow`` past the cap returns -1 to
  the guest, a module that starts above it does not instantiate
  (:class:`OutOfMemoryError`); free at run time;
* wall clock — an epoch deadline (:class:`SandboxTimeoutError`); the one
  check wasmtime compiles into every function entry and loop back-edge;
* CPU share — ``max_cpu_percent`` below 100 registers an epoch-deadline
  callback that runs every :data:`PACE_SLICE_S` of guest execution and
  sleeps the guest until its CPU time is back within the share;
* instructions — fuel, only when the run sets ``max_fuel``
  (:class:`OutOfFuelError`). Fuel instruments every basic block, so metered
  runs use a second engine, built (and each module compiled for it) on first
  use: runs that do not count instructions never pay for counting;
* API calls — a token bucket in the host function (:class:`RateLimitedError`).

``ifctl bench chassis`` measures what each of these costs on each workload,
against raw wasmtime in the same run.

Nothing is ever limited with ``setrlimit`` in this process. WASI grants
nothing unless :class:`WasiGrants` lists it; guests never inherit the host's
environment, argv or stdio, and no socket can be created or reached.

Every failure ends only its own run: the sandbox stays usable, and many
threads may run modules at once (each run has its own store; engine, modules
and pre-instantiated modules are shared). The task ABI is documented in
``docs/chassis-abi.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import wasmtime
from wasmtime import _ffi as wffi

from infrafabric.chassis.compiler import compile_in_worker, engine_config
from infrafabric.chassis.hostapi import (
    HOST_MODULES,
    ApiGate,
    HostContext,
    Transport,
    define_host_functions,
    define_wasi_poll,
    describe_context,
)
from infrafabric.chassis.models import CompileLimits, ResourceLimits, WasiGrants
from infrafabric.errors import (
    ConfigurationError,
    ForbiddenImportError,
    GuestTrapError,
    ModuleLoadError,
    OutOfFuelError,
    OutOfMemoryError,
    SandboxError,
    SandboxTimeoutError,
)

__all__ = [
    "MAX_STREAM_BYTES",
    "MAX_TASK_OUTPUT_BYTES",
    "PACE_SLICE_S",
    "WASI_FUNCTIONS",
    "WASI_MODULE",
    "CacheStats",
    "CommandResult",
    "CompiledModule",
    "Pacer",
    "Runner",
    "Sandbox",
    "TaskResult",
    "cache_root",
    "classify_trap",
    "default_cache_dir",
    "epoch_callback",
    "run_details",
    "set_epoch_callback",
]

log = logging.getLogger(__name__)

WASI_MODULE = "wasi_snapshot_preview1"
#: the WASI preview 1 functions a module may import. Preview 1 has no call that creates a socket
#: (``sock_open``/``sock_connect`` are WasmEdge extensions, refused as unknown); the ``sock_*`` calls
#: below act only on socket descriptors the host hands over, and it hands over none, so they fail
#: (EBADF/ENOTSOCK). They are linked because wasi-libc programs import them.
WASI_FUNCTIONS = frozenset([
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
    "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
    "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size", "fd_filestat_set_times", "fd_pread",
    "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber", "fd_seek",
    "fd_sync", "fd_tell", "fd_write", "path_create_directory", "path_filestat_get",
    "path_filestat_set_times", "path_link", "path_open", "path_readlink", "path_remove_directory",
    "path_rename", "path_symlink", "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise",
    "sched_yield", "random_get", "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
])
#: bytes of stdout (and, separately, stderr) a command run keeps; the rest is dropped
MAX_STREAM_BYTES = 16 * 1024 * 1024
#: largest JSON result a task may return
MAX_TASK_OUTPUT_BYTES = 64 * 1024 * 1024
#: epoch tick (seconds); deadlines are accurate to about one tick
EPOCH_TICK_S = 0.001
#: how much guest execution a paced run (``max_cpu_percent`` below 100) gets between two checks of
#: its CPU share: the overshoot is at most one slice, and a run shorter than one is never slowed
PACE_SLICE_S = 0.010
_PACE_SLICE_TICKS = round(PACE_SLICE_S / EPOCH_TICK_S)
#: how long the epoch thread keeps ticking after the last run ends
_TICKER_LINGER_S = 0.1
# wasmtime's C API: the epoch-deadline callback (wasmtime-py 51 binds it but does not wrap it)
_EPOCH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.POINTER(wffi.wasmtime_context_t), ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_uint64),
                                   ctypes.POINTER(wffi.wasmtime_update_deadline_kind_t))
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
_DEADLINE_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
_PAGE = 65536
_CACHE_MAGIC = b"IFCWASM1"
_CACHE_FORMAT = "1"
_FUNC_SIGS = {
    "alloc": (["i32"], ["i32"]),
    "run": (["i32", "i32"], ["i64"]),
    "_start": ([], []),
    "_initialize": ([], []),
}

T = TypeVar("T")


@dataclass(frozen=True)
class CompiledModule:
    """A validated, compiled module, ready to run any number of times.

    ``kind`` is ``"task"`` when the module exports the task ABI (``memory``,
    ``alloc``, ``run``), ``"command"`` when it exports a WASI ``_start``.
    ``origin`` says where this compile came from: ``"compiled"``, ``"disk"``
    (the on-disk cache) or ``"memory"`` (this sandbox's in-memory cache).
    """

    digest: str
    name: str
    kind: Literal["task", "command"]
    imports: tuple[tuple[str, str], ...]
    origin: Literal["compiled", "disk", "memory"] = "compiled"
    _module: wasmtime.Module | None = field(default=None, repr=False, compare=False)
    _pre: wasmtime.InstancePre | None = field(default=None, repr=False, compare=False)
    _source: bytes = field(default=b"", repr=False, compare=False)
    _exports: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _trusted: bool = field(default=False, repr=False, compare=False)


@dataclass
class CommandResult:
    """Outcome of a WASI command run. A non-zero ``exit_code`` (from the guest's
    ``proc_exit``) is reported here, not raised. ``fuel_used`` is ``None``
    unless the run set ``max_fuel``; ``cpu_s`` is the CPU time of the run's
    thread, ``paused_s`` how long pacing to ``max_cpu_percent`` held it."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    fuel_used: int | None
    elapsed_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    cpu_s: float = 0.0
    paused_s: float = 0.0


@dataclass
class TaskResult:
    """Outcome of a task run: the guest's JSON result and what it did on the way.

    ``refusals`` lists the ``api_call`` attempts a credential, scope or
    missing transport refused (the guest saw ``-1``); ``api_errors`` the ones
    that failed otherwise (``-2``, ``-3``, ``-4``). ``fuel_used`` is ``None``
    unless the run set ``max_fuel``; ``cpu_s`` is the CPU time of the run's
    thread, ``paused_s`` how long pacing to ``max_cpu_percent`` held it.
    """

    output: Any
    logs: list[str]
    api_calls: int
    fuel_used: int | None
    elapsed_s: float
    log_truncated: bool = False
    refusals: list[str] = field(default_factory=list)
    api_errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    paused_s: float = 0.0


@dataclass
class CacheStats:
    """Counters of the compiled-module cache (for tests and ``bench``)."""

    compiled: int = 0
    #: of those, how many compiled in a limited child process
    bounded_compiles: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    disk_writes: int = 0
    disk_rejects: int = 0


@dataclass
class _Entry:
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    kind: Literal["task", "command"]
    imports: tuple[tuple[str, str], ...]
    exports: frozenset[str]


@dataclass
class _Flavor:
    """One engine configuration of a sandbox (with fuel metering or without):
    its engine, linker, epoch ticker, disk-cache key and compiled modules."""

    fuel: bool
    engine: wasmtime.Engine
    linker: wasmtime.Linker
    ticker: _EpochTicker
    fingerprint: str
    entries: dict[str, _Entry] = field(default_factory=dict)


def cache_root() -> Path:
    """``$IF_CACHE_DIR``, else ``$XDG_CACHE_HOME/infrafabric``, else ``~/.cache/infrafabric``."""
    explicit = os.environ.get("IF_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "infrafabric"


def default_cache_dir() -> Path:
    """Where compiled modules are kept: ``<cache root>/modules`` (see :func:`cache_root`)."""
    return cache_root() / "modules"


def run_details(exc: BaseException) -> dict[str, Any]:
    """What a failed run did before it was stopped (logs, api calls, refusals,
    ``fuel_used``, ``elapsed_s``, ``module``), or ``{}`` if ``exc`` carries
    nothing. Every :class:`SandboxError` raised by a run carries it."""
    details = getattr(exc, "details", None)
    return dict(details) if isinstance(details, dict) else {}


def _trap_summary(trap: wasmtime.Trap | wasmtime.WasmtimeError) -> str:
    text = str(trap)
    for line in text.splitlines():
        _, marker, rest = line.partition("wasm trap:")
        if marker:
            return rest.strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown trap"


def classify_trap(trap: wasmtime.Trap, limits: ResourceLimits, memory_bytes: int) -> SandboxError:
    """Name the limit behind a trap.

    A refused ``memory.grow`` does not trap: the guest sees -1 and usually
    traps soon after (``unreachable`` in Rust, a null dereference in C), and
    wasmtime's C API cannot report the refusal itself. So a trap is reported
    as :class:`OutOfMemoryError` when the guest holds more than half of its
    memory limit, or cannot grow by one more page, at the moment it traps;
    every other trap is a :class:`GuestTrapError` whose message states the
    memory in use.
    """
    code = trap.trap_code
    if code is wasmtime.TrapCode.OUT_OF_FUEL:
        return OutOfFuelError(f"guest used up its fuel ({limits.max_fuel})")
    if code is wasmtime.TrapCode.INTERRUPT:
        return _timeout(limits)
    summary = _trap_summary(trap)
    used = f"{memory_bytes / (1024 * 1024):.1f} of {limits.max_memory_mb} MiB memory in use"
    headroom = limits.max_memory_bytes - memory_bytes
    if code is not wasmtime.TrapCode.STACK_OVERFLOW and (headroom < _PAGE or memory_bytes > headroom):
        return OutOfMemoryError(f"guest trapped ({summary}) with {used}: a memory.grow past the limit "
                                "was most likely refused")
    name = code.name.lower() if code is not None else "trap"
    return GuestTrapError(f"guest trapped: {name}: {summary} ({used})")


def _timeout(limits: ResourceLimits) -> SandboxTimeoutError:
    return SandboxTimeoutError(f"guest ran past its {limits.max_execution_time_seconds:g} s deadline")


def _with_module(exc: SandboxError, module: str, details: dict[str, Any]) -> SandboxError:
    exc.message = f"module {module!r}: {exc.message}"
    exc.args = (exc.message,)
    exc.details = details  # type: ignore[attr-defined]
    return exc


class _EpochTicker:
    """Advances the engine's epoch once per :data:`EPOCH_TICK_S` while runs are active.

    The epoch is derived from the monotonic clock rather than counted per
    sleep, so oversleeping does not stretch deadlines. The thread keeps
    ticking for :data:`_TICKER_LINGER_S` after the last run ends: waking it
    for every run of a stream of short tasks cost each about 8 µs (the wake-up
    and the GIL hand-over), more than a trivial task's limits themselves.
    """

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._active = 0
        self._stop = False
        self._thread: threading.Thread | None = None

    def enter(self) -> None:
        with self._cond:
            if self._stop:
                raise ConfigurationError("sandbox is closed")
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="infrafabric-epoch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def leave(self) -> None:
        with self._cond:
            self._active -= 1

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._active == 0 and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            base = time.monotonic()
            ticks = 0
            idle_since: float | None = None
            while True:
                time.sleep(EPOCH_TICK_S)
                now = time.monotonic()
                due = int((now - base) / EPOCH_TICK_S)
                while ticks < due:
                    self._engine.increment_epoch()
                    ticks += 1
                with self._cond:
                    if self._stop:
                        break
                    if self._active:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = now
                    elif now - idle_since >= _TICKER_LINGER_S:
                        break


def epoch_callback(fn: Callable[[], int | None]) -> Any:
    """wasmtime's epoch-deadline callback around ``fn``, for :func:`set_epoch_callback`.

    wasmtime calls it on the guest's thread, the guest paused, each time a
    store reaches its epoch deadline. ``fn`` returns the ticks until the next
    call, or ``None`` to stop the run (the call then fails with a
    ``WasmtimeError``: whoever stops it records why). An exception from ``fn``
    stops the run too: nothing may unwind into wasmtime's frames. Keep the
    returned object alive as long as any store using it.
    """

    def call(_context: Any, _data: Any, delta: Any, kind: Any) -> int:
        try:
            ticks = fn()
        except BaseException:
            ticks = None
        if ticks is None:
            error = wffi.wasmtime_error_new(b"infrafabric: run stopped by the host")
            return ctypes.cast(error, ctypes.c_void_p).value or 0
        delta[0] = ticks
        kind[0] = _DEADLINE_CONTINUE
        return 0

    return _EPOCH_CALLBACK(call)


def set_epoch_callback(store: wasmtime.Store, callback: Any) -> None:
    """Make ``store`` call ``callback`` (from :func:`epoch_callback`) at its
    epoch deadline instead of trapping (wasmtime-py 51 binds this C call but
    does not wrap it)."""
    wffi.wasmtime_store_epoch_deadline_callback(store.ptr(), callback, None, _NO_FINALIZER)


class Pacer:
    """Holds one run to its CPU share (``max_cpu_percent``) and its deadline.

    wasmtime calls :meth:`on_epoch` (through :func:`epoch_callback`) each time the run
    reaches its epoch deadline, which the pacer keeps one
    :data:`PACE_SLICE_S` ahead. At each call the run's thread CPU time is
    compared with what the share allows for the wall time since the start; a
    run ahead of its share sleeps (inside the callback, so the guest is
    paused where it stands) until it is back within it, never past its
    deadline. No instruction is added to the guest: the cost is one callback
    per slice.
    """

    def __init__(self, limits: ResourceLimits, ctx: HostContext) -> None:
        self.limits = limits
        self.ctx = ctx
        self.share = limits.max_cpu_percent / 100
        self.wall0 = time.monotonic()
        self.cpu0 = time.thread_time()
        self.paused_s = 0.0

    def on_epoch(self) -> int | None:
        """Ticks until the next check, or ``None`` to stop the run (``ctx.abort`` says why)."""
        ctx = self.ctx
        if ctx.abort is not None:  # a host function ended the run
            return None
        now = time.monotonic()
        ahead = (time.thread_time() - self.cpu0) / self.share - (now - self.wall0)
        if ahead > 0 and now < ctx.deadline:
            pause = min(ahead, ctx.deadline - now)
            time.sleep(pause)
            self.paused_s += pause
            now = time.monotonic()
        if now >= ctx.deadline:
            ctx.abort = _timeout(self.limits)
            return None
        return max(1, min(_PACE_SLICE_TICKS, math.ceil((ctx.deadline - now) / EPOCH_TICK_S)))


class _BoundedSink:
    """A WASI output stream that keeps at most ``cap`` bytes and drops the rest
    (reporting every write as complete, so the guest does not spin retrying)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def __call__(self, data: bytes) -> int:
        written = len(data)
        room = self.cap - self.size
        if written > room:
            self.truncated = True
            data = data[:room]
        if data:
            self.chunks.append(data)
            self.size += len(data)
        return written

    def value(self) -> bytes:
        return b"".join(self.chunks)


def _valtypes(types: Sequence[wasmtime.ValType]) -> list[str]:
    return [str(t) for t in types]


class Runner(Protocol):
    """What runs modules under limits: :class:`Sandbox` (in this process) or
    :class:`~infrafabric.chassis.process.ProcessSandbox` (in worker processes)."""

    def compile(self, source: bytes | str | Path, *, name: str = "module",
                allowed_imports: Collection[tuple[str, str]] | None = None,
                trusted_sha256: str | None = None) -> CompiledModule:
        """Validate and compile a module."""

    def run_command(self, module: CompiledModule, *, argv: Sequence[str] = (), stdin: bytes = b"",
                    limits: ResourceLimits = ..., grants: WasiGrants = ...) -> CommandResult:
        """Run a WASI command module's ``_start``."""

    def run_task(self, module: CompiledModule, payload: Any, *, limits: ResourceLimits = ...,
                 gate: ApiGate | None = None, transport: Transport | None = None) -> TaskResult:
        """Run one task: JSON in, JSON out."""


class Sandbox:
    """Compiles and runs WebAssembly modules under per-run limits.

    :param cache_dir: where compiled modules are kept between processes
        (default :func:`default_cache_dir`). Created ``0700``; if it cannot be
        created or is writable by others, the disk cache is off.
    :param compact_memory: reserve only the address space linear memory
        actually uses (explicit bounds checks instead of wasmtime's 4 GiB
        guard reservation per memory). Slower, but it lets a worker process
        run under a tight ``RLIMIT_AS``; see :mod:`infrafabric.chassis.worker`.
    :param compile_limits: bounds on compiling a module not already in the
        cache, done in a limited child process (:mod:`infrafabric.chassis.compiler`);
        ``None`` compiles every module in this process, unbounded (for a
        process that is itself limited).
    :param interruptible: compile epoch checks into guest code, so this
        process can stop a run at its deadline and pace it to its CPU share.
        ``False`` compiles none (guests run at the engine's full speed) and
        leaves the wall clock and the CPU share to whoever runs this process:
        only for a worker that its parent kills and stops from outside
        (:class:`~infrafabric.chassis.process.ProcessSandbox`); runs must then
        be one at a time.
    """

    def __init__(self, *, cache_dir: Path | None = None, compact_memory: bool = False,
                 compile_limits: CompileLimits | None = CompileLimits(),  # noqa: B008 - frozen
                 interruptible: bool = True) -> None:
        self.compact_memory = compact_memory
        self.compile_limits = compile_limits
        self.interruptible = interruptible
        self._local = threading.local()
        self._lock = threading.Lock()
        self._flavors: dict[bool, _Flavor] = {}
        self._closed = False
        # one callback for every paced run of this sandbox: it finds the run's pacer per thread
        self._epoch_callback = epoch_callback(self._pace)
        self.stats = CacheStats()
        self.cache_dir: Path | None = self._prepare_cache_dir(cache_dir or default_cache_dir())
        self._default = self._flavor(fuel=False)

    def _flavor(self, *, fuel: bool) -> _Flavor:
        """The engine for runs with (``fuel``) or without an instruction budget, built on first use."""
        with self._lock:
            flavor = self._flavors.get(fuel)
            if flavor is not None:
                return flavor
            if self._closed:
                raise ConfigurationError("sandbox is closed")
            engine = wasmtime.Engine(engine_config(compact_memory=self.compact_memory, fuel=fuel,
                                                   epoch=self.interruptible))
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            linker.allow_shadowing = True
            define_wasi_poll(linker, self._current)  # a sleeping guest still meets its deadline
            linker.allow_shadowing = False
            define_host_functions(linker, self._current, classify_trap)
            fingerprint = "|".join([
                "infrafabric-cwasm", _CACHE_FORMAT, importlib.metadata.version("wasmtime"),
                platform.system(), platform.machine(), "fuel" if fuel else "nofuel",
                "epoch" if self.interruptible else "noepoch",
                "compact" if self.compact_memory else "guarded",
            ])
            flavor = self._flavors[fuel] = _Flavor(fuel, engine, linker, _EpochTicker(engine), fingerprint)
            return flavor

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the epoch thread. Runs in progress may then miss their deadline,
        so close only when idle; later runs raise :class:`ConfigurationError`."""
        with self._lock:
            self._closed = True
            flavors = list(self._flavors.values())
        for flavor in flavors:
            flavor.ticker.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> wasmtime.Engine:
        """The wasmtime engine of runs without an instruction budget (epoch
        interruption, no fuel): the one :meth:`compile` compiles for."""
        return self._default.engine

    def _current(self) -> HostContext | None:
        ctx: HostContext | None = getattr(self._local, "ctx", None)
        return ctx

    # -- compiling ---------------------------------------------------------------------------------

    def compile(self, source: bytes | str | Path, *, name: str = "module",
                allowed_imports: Collection[tuple[str, str]] | None = None,
                trusted_sha256: str | None = None) -> CompiledModule:
        """Validate and compile a module (WAT text, wasm binary, or a path to either).

        ``str`` is WAT text when it starts with ``(`` or ``;;``, otherwise a path.
        Imports are checked against what the host offers (the task host
        functions under ``infrafabric``/``env``, the WASI preview 1 functions
        in :data:`WASI_FUNCTIONS`); ``allowed_imports`` narrows that further
        to the listed ``(module, name)`` pairs (``name`` may be ``"*"``).

        A module not already compiled (here or in the disk cache) compiles
        under :attr:`compile_limits`, in a limited child process, unless it
        is small or its sha256 is ``trusted_sha256`` (a pinned runtime).

        :raises ForbiddenImportError: an import the host does not grant.
        :raises ModuleLoadError: unreadable, malformed or truncated bytes, bad
            WAT, neither the task ABI nor ``_start`` exported, or more memory
            or time to compile than :attr:`compile_limits` allow.
        """
        raw = self._read_source(source, name)
        digest = hashlib.sha256(raw).hexdigest()
        trusted = digest == trusted_sha256
        entry, origin = self._entry(self._default, raw, digest, name, trusted=trusted)
        if allowed_imports is not None:
            self._check_allowed(name, entry.imports, allowed_imports)
        return CompiledModule(digest=digest, name=name, kind=entry.kind, imports=entry.imports, origin=origin,
                              _module=entry.module, _pre=entry.pre, _source=raw, _exports=entry.exports,
                              _trusted=trusted)

    def _entry(self, flavor: _Flavor, raw: bytes, digest: str, name: str, *,
               trusted: bool) -> tuple[_Entry, Literal["compiled", "disk", "memory"]]:
        with self._lock:
            entry = flavor.entries.get(digest)
            if entry is not None:
                self.stats.memory_hits += 1
                return entry, "memory"
        built, origin = self._build(flavor, raw, digest, name, trusted=trusted)
        with self._lock:
            return flavor.entries.setdefault(digest, built), origin

    @staticmethod
    def _read_source(source: bytes | str | Path, name: str) -> bytes:
        if isinstance(source, str):
            stripped = source.lstrip()
            if stripped.startswith(("(", ";;")):
                return source.encode("utf-8")
            source = Path(source)
        if isinstance(source, Path):
            try:
                return source.read_bytes()
            except OSError as exc:
                reason = exc.strerror or exc
                raise ModuleLoadError(f"module {name!r}: cannot read {source}: {reason}") from exc
        if isinstance(source, (bytes, bytearray, memoryview)):
            return bytes(source)
        raise ModuleLoadError(f"module {name!r}: expected WAT text, wasm bytes or a path, "
                              f"got {type(source).__name__}")

    def _to_module(self, flavor: _Flavor, raw: bytes, name: str, *, trusted: bool) -> wasmtime.Module:
        if raw.startswith(b"\0asm"):
            wasm: bytes | str = raw
        else:
            try:
                wasm = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ModuleLoadError(
                    f"module {name!r}: neither a wasm binary (no \\0asm header) nor UTF-8 WAT text") from None
            if "(module" not in wasm and not wasm.lstrip().startswith(("(", ";;")):
                raise ModuleLoadError(
                    f"module {name!r}: neither a wasm binary (no \\0asm header) nor WAT text")
        limits = self.compile_limits
        if limits is not None and not trusted and len(raw) > limits.inline_bytes:
            payload = compile_in_worker(wasm, name=name, compact_memory=self.compact_memory, fuel=flavor.fuel,
                                        epoch=self.interruptible, limits=limits)
            with self._lock:
                self.stats.bounded_compiles += 1
            try:
                return wasmtime.Module.deserialize(flavor.engine, payload)
            except wasmtime.WasmtimeError as exc:  # a compiler of another wasmtime on the import path
                raise ModuleLoadError(f"module {name!r}: the compiler process returned an unusable "
                                      f"module: {exc}") from exc
        try:
            return wasmtime.Module(flavor.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            what = "malformed or truncated wasm" if isinstance(wasm, bytes) else "invalid WAT"
            detail = " ".join(str(exc).split())
            raise ModuleLoadError(f"module {name!r}: {what}: {detail}") from exc

    def _build(self, flavor: _Flavor, raw: bytes, digest: str, name: str, *,
               trusted: bool) -> tuple[_Entry, Literal["compiled", "disk"]]:
        cached = self._load_cached(flavor, digest)
        origin: Literal["compiled", "disk"] = "disk"
        module = cached
        if module is None:
            module = self._to_module(flavor, raw, name, trusted=trusted)
            origin = "compiled"
            with self._lock:
                self.stats.compiled += 1
        imports = tuple((imp.module, imp.name or "") for imp in module.imports)
        self._check_host_imports(name, module)
        kind, exports = self._check_exports(name, module)
        try:
            pre = flavor.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            detail = " ".join(str(exc).split())
            raise ModuleLoadError(f"module {name!r}: imports do not match the host: {detail}") from exc
        if origin == "compiled":
            self._store_cached(flavor, digest, module)
        else:
            with self._lock:
                self.stats.disk_hits += 1
        return _Entry(module, pre, kind, imports, exports), origin

    @staticmethod
    def _check_host_imports(name: str, module: wasmtime.Module) -> None:
        bad: list[str] = []
        for imp in module.imports:
            where = f"{imp.module}.{imp.name}"
            if not isinstance(imp.type, wasmtime.FuncType):
                bad.append(f"{where} (only functions may be imported)")
            elif imp.module == WASI_MODULE:
                if imp.name not in WASI_FUNCTIONS:
                    bad.append(f"{where} (not a WASI preview 1 function the host offers; no socket can be "
                               "created)" if (imp.name or "").startswith("sock_") else
                               f"{where} (not a WASI preview 1 function)")
            elif imp.module in HOST_MODULES:
                if imp.name not in ("log", "api_call"):
                    bad.append(f"{where} (the host offers only log and api_call)")
            else:
                bad.append(f"{where} (unknown import module)")
        if bad:
            raise ForbiddenImportError(f"module {name!r} imports what the host does not grant: "
                                       + ", ".join(bad))

    @staticmethod
    def _check_allowed(name: str, imports: tuple[tuple[str, str], ...],
                       allowed: Collection[tuple[str, str]]) -> None:
        allowed_set = set(allowed)
        bad = [f"{m}.{n}" for m, n in imports if (m, n) not in allowed_set and (m, "*") not in allowed_set]
        if bad:
            raise ForbiddenImportError(f"module {name!r} imports what its contract does not allow: "
                                       + ", ".join(bad))

    @staticmethod
    def _check_exports(name: str, module: wasmtime.Module,
                       ) -> tuple[Literal["task", "command"], frozenset[str]]:
        exports = {exp.name: exp.type for exp in module.exports}
        problems: list[str] = []
        for fn, (params, results) in _FUNC_SIGS.items():
            ty = exports.get(fn)
            if ty is None:
                continue
            if not isinstance(ty, wasmtime.FuncType):
                problems.append(f"export {fn!r} is not a function")
            elif _valtypes(ty.params) != params or _valtypes(ty.results) != results:
                problems.append(f"export {fn!r} has type ({', '.join(_valtypes(ty.params))}) -> "
                                f"({', '.join(_valtypes(ty.results))}), expected ({', '.join(params)}) -> "
                                f"({', '.join(results)})")
        if problems:
            raise ModuleLoadError(f"module {name!r}: " + "; ".join(problems))
        task_parts = [p for p in ("alloc", "run") if p in exports]
        kind: Literal["task", "command"]
        if len(task_parts) == 2:
            if not isinstance(exports.get("memory"), wasmtime.MemoryType):
                raise ModuleLoadError(f"module {name!r}: the task ABI needs an exported memory 'memory'")
            kind = "task"
        elif "_start" in exports:
            kind = "command"
        elif task_parts:
            missing = [p for p in ("memory", "alloc", "run") if p not in exports]
            raise ModuleLoadError(f"module {name!r}: incomplete task ABI, missing export(s) "
                                  + ", ".join(missing))
        else:
            raise ModuleLoadError(f"module {name!r}: exports neither the task ABI (memory, alloc, run) "
                                  "nor a WASI command entry point (_start)")
        return kind, frozenset(exports)

    # -- disk cache ----------------------------------------------------------------------------------

    @staticmethod
    def _prepare_cache_dir(path: Path) -> Path | None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.stat(path, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                log.warning("module cache %s is not a directory owned by us; disk cache off", path)
                return None
            if st.st_mode & 0o077:
                os.chmod(path, 0o700)
            return path
        except OSError as exc:
            log.warning("module cache %s unusable (%s); disk cache off", path, exc)
            return None

    def _cache_path(self, flavor: _Flavor, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{flavor.fingerprint}|{digest}".encode()).hexdigest()
        return self.cache_dir / f"{key}.cwasm"

    def _load_cached(self, flavor: _Flavor, digest: str) -> wasmtime.Module | None:
        path = self._cache_path(flavor, digest)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_uid != os.getuid() or st.st_mode & 0o077:
                    raise ValueError("not a private file of ours")
                blob = fh.read()
            header = len(_CACHE_MAGIC) + 32
            if len(blob) < header or not blob.startswith(_CACHE_MAGIC):
                raise ValueError("bad header")
            payload = blob[header:]
            # only bytes we wrote reach deserialize: wasmtime trusts them as machine code
            if hashlib.sha256(payload).digest() != blob[len(_CACHE_MAGIC):header]:
                raise ValueError("checksum mismatch")
            return wasmtime.Module.deserialize(flavor.engine, payload)
        except (OSError, ValueError, wasmtime.WasmtimeError) as exc:
            log.info("ignoring cached module %s: %s", path.name, exc)
            with self._lock:
                self.stats.disk_rejects += 1
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def _store_cached(self, flavor: _Flavor, digest: str, module: wasmtime.Module) -> None:
        path = self._cache_path(flavor, digest)
        if path is None:
            return
        try:
            payload = bytes(module.serialize())
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as fh:  # mkstemp creates it 0600
                    fh.write(_CACHE_MAGIC + hashlib.sha256(payload).digest() + payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            with self._lock:
                self.stats.disk_writes += 1
        except (OSError, wasmtime.WasmtimeError) as exc:
            log.warning("could not cache module %s: %s", digest[:12], exc)

    # -- running -----------------------------------------------------------------------------------

    def run_command(self, module: CompiledModule, *, argv: Sequence[str] = (), stdin: bytes = b"",
                    limits: ResourceLimits = ResourceLimits(),  # noqa: B008 - frozen model
                    grants: WasiGrants = WasiGrants()) -> CommandResult:  # noqa: B008 - frozen model
        """Run a WASI command module's ``_start``.

        ``argv`` are the arguments after the program name (the guest sees
        ``[module.name, *argv]``). Only the directories and environment
        variables in ``grants`` are visible. stdout and stderr are captured,
        each up to :data:`MAX_STREAM_BYTES`. The guest's ``proc_exit`` code is
        returned in :attr:`CommandResult.exit_code`.

        :raises OutOfFuelError, SandboxTimeoutError, OutOfMemoryError, GuestTrapError:
            the run was stopped (only this run).
        :raises ConfigurationError: a granted directory does not exist.
        """
        if "_start" not in module._exports:
            raise ModuleLoadError(f"module {module.name!r} has no _start export; it is a task module")
        wasi = wasmtime.WasiConfig()
        wasi.argv = [module.name, *argv]
        if grants.env:
            wasi.env = list(grants.env.items())
        for grant in grants.directories:
            host = Path(grant.host)
            if not host.is_dir():
                raise ConfigurationError(
                    f"granted directory {grant.host!r} does not exist or is not a directory")
            wasi.preopen_dir(str(host.resolve()), grant.guest, fs_mutable=not grant.read_only)
        out, err = _BoundedSink(MAX_STREAM_BYTES), _BoundedSink(MAX_STREAM_BYTES)
        wasi.stdout_custom = out
        wasi.stderr_custom = err
        ctx = HostContext(limits=limits, deadline=time.monotonic() + limits.max_execution_time_seconds)
        with contextlib.ExitStack() as stack:
            if stdin:
                tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="if-stdin-"))
                stdin_path = Path(tmpdir) / "stdin"
                stdin_path.write_bytes(stdin)
                wasi.stdin_file = str(stdin_path)

            def body(store: wasmtime.Store, instance: wasmtime.Instance) -> int:
                start = instance.exports(store)["_start"]
                assert isinstance(start, wasmtime.Func)
                try:
                    start(store)
                except wasmtime.ExitTrap as exc:
                    return exc.code
                return 0

            code, fuel, elapsed, cpu, paused = self._execute(module, limits, ctx, wasi, body)
        return CommandResult(exit_code=code, stdout=out.value(), stderr=err.value(), fuel_used=fuel,
                             elapsed_s=elapsed, stdout_truncated=out.truncated,
                             stderr_truncated=err.truncated, cpu_s=cpu, paused_s=paused)

    def run_task(self, module: CompiledModule, payload: Any, *,
                 limits: ResourceLimits = ResourceLimits(),  # noqa: B008 - frozen model
                 gate: ApiGate | None = None, transport: Transport | None = None) -> TaskResult:
        """Run one task: ``payload`` in as JSON, the guest's JSON result out.

        ``api_call`` goes through ``gate`` (if given) and ``transport``; with
        no transport every call is refused. See ``docs/chassis-abi.md``.

        :raises ConfigurationError: ``payload`` is not JSON-serializable.
        :raises RateLimitedError, OutOfFuelError, SandboxTimeoutError, OutOfMemoryError, GuestTrapError:
            the task was stopped; :func:`run_details` on the error tells what it did first.
        """
        if module.kind != "task":
            raise ModuleLoadError(f"module {module.name!r} is a WASI command, not a task; use run_command")
        try:
            data = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"task payload is not JSON-serializable: {exc}") from exc
        ctx = HostContext(limits=limits, deadline=time.monotonic() + limits.max_execution_time_seconds,
                          gate=gate, transport=transport)

        def body(store: wasmtime.Store, instance: wasmtime.Instance) -> Any:
            exports = instance.exports(store)
            memory, alloc, run = exports["memory"], exports["alloc"], exports["run"]
            assert isinstance(memory, wasmtime.Memory)
            assert isinstance(alloc, wasmtime.Func) and isinstance(run, wasmtime.Func)
            init = exports.get("_initialize")
            if isinstance(init, wasmtime.Func):
                init(store)
            ptr = alloc(store, len(data)) & 0xFFFFFFFF
            if ptr + len(data) > memory.data_len(store) or (ptr == 0 and data):
                raise GuestTrapError(f"alloc({len(data)}) for the payload returned {ptr}, "
                                     "outside guest memory or null")
            if data:
                memory.write(store, data, ptr)
            packed = run(store, ptr, len(data)) & 0xFFFFFFFFFFFFFFFF
            if ctx.abort is not None:
                return None
            out_ptr, out_len = packed >> 32, packed & 0xFFFFFFFF
            if out_len > MAX_TASK_OUTPUT_BYTES:
                raise GuestTrapError(f"task output of {out_len} bytes exceeds {MAX_TASK_OUTPUT_BYTES}")
            if out_ptr + out_len > memory.data_len(store):
                raise GuestTrapError(f"task output ({out_ptr}, {out_len}) is outside guest memory "
                                     f"({memory.data_len(store)} bytes)")
            raw = bytes(memory.read(store, out_ptr, out_ptr + out_len))
            try:
                return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
            except (UnicodeDecodeError, ValueError) as exc:
                preview = raw[:60].decode("utf-8", errors="replace")
                raise GuestTrapError(f"task output is not valid UTF-8 JSON ({exc}): {preview!r}") from None

        output, fuel, elapsed, cpu, paused = self._execute(module, limits, ctx, wasmtime.WasiConfig(), body)
        return TaskResult(output=output, logs=ctx.logs, api_calls=ctx.api_calls, fuel_used=fuel,
                          elapsed_s=elapsed, log_truncated=ctx.log_truncated, refusals=ctx.refusals,
                          api_errors=ctx.api_errors, cpu_s=cpu, paused_s=paused)

    def _execute(self, module: CompiledModule, limits: ResourceLimits, ctx: HostContext,
                 wasi: wasmtime.WasiConfig, body: Callable[[wasmtime.Store, wasmtime.Instance], T],
                 ) -> tuple[T, int | None, float, float, float]:
        """Run ``body`` on a fresh instance under ``limits``: result, fuel used
        (``None`` unless metered), elapsed, CPU and paused seconds."""
        if self._closed:
            raise ConfigurationError("sandbox is closed")
        if module._pre is None:
            raise ModuleLoadError(f"module {module.name!r} was not compiled by a Sandbox")
        metered = limits.max_fuel is not None
        flavor = self._flavor(fuel=metered)
        pre = module._pre
        if metered:  # the module compiled for the fuel engine, once (memory, then disk cache)
            entry, _ = self._entry(flavor, module._source, module.digest, module.name,
                                   trusted=module._trusted)
            pre = entry.pre
        store = wasmtime.Store(flavor.engine)
        store.set_limits(memory_size=limits.max_memory_bytes, memories=1, instances=1, tables=8,
                         table_elements=1_000_000)
        if limits.max_fuel is not None:
            store.set_fuel(limits.max_fuel)
        ctx.monotonic_origin_ns = time.monotonic_ns()
        # a WASI call on a store without WASI aborts the process, so any module importing a WASI
        # function gets it; one importing none cannot make such a call (5 µs a task saved)
        if module.kind == "command" or any(m == WASI_MODULE for m, _ in module.imports):
            store.set_wasi(wasi)
        pacer: Pacer | None = None
        if not self.interruptible:
            ctx.stop_by_trap = True  # nothing in the guest's code checks a deadline
        elif limits.max_cpu_percent < 100:
            pacer = Pacer(limits, ctx)
            set_epoch_callback(store, self._epoch_callback)
            store.set_epoch_deadline(_PACE_SLICE_TICKS)
        else:
            store.set_epoch_deadline(math.ceil(limits.max_execution_time_seconds / EPOCH_TICK_S) + 1)
        instance: wasmtime.Instance | None = None
        error: SandboxError | None = None
        result: T | None = None
        if self.interruptible:
            flavor.ticker.enter()
        outer = self._current()  # a transport may itself run a task on this thread
        outer_pacer = getattr(self._local, "pacer", None)
        self._local.ctx = ctx
        self._local.pacer = pacer
        started = time.perf_counter()
        cpu_started = time.thread_time()
        try:
            instance = pre.instantiate(store)
            result = body(store, instance)
        except wasmtime.Trap as trap:
            error = ctx.abort or classify_trap(trap, limits, _memory_bytes(store, instance))
            _unlink(trap)
        except wasmtime.ExitTrap as exc:
            error = ctx.abort or GuestTrapError(f"task called proc_exit({exc.code})")
            _unlink(exc)
        except wasmtime.WasmtimeError as exc:
            _unlink(exc)
            text = " ".join(str(exc).split())
            if ctx.abort is not None:
                error = ctx.abort
            elif "exceeds memory limits" in text or "Cannot allocate memory" in text:
                error = OutOfMemoryError(
                    f"does not fit in its {limits.max_memory_mb} MiB memory limit: {text}")
            else:
                error = GuestTrapError(f"failed: {text}")
        except SandboxError as exc:
            error = ctx.abort or exc
        except Exception as exc:  # a host-function exception from another thread, relayed by wasmtime-py
            error = ctx.abort or GuestTrapError(f"host error during the run: {type(exc).__name__}: {exc}")
            _unlink(exc)
            error.__cause__ = exc
        finally:
            elapsed = time.perf_counter() - started
            cpu = time.thread_time() - cpu_started
            self._local.ctx = outer
            self._local.pacer = outer_pacer
            if self.interruptible:
                flavor.ticker.leave()
        fuel_used: int | None = None
        if limits.max_fuel is not None:
            try:
                fuel_used = limits.max_fuel - store.get_fuel()
            except wasmtime.WasmtimeError:
                fuel_used = limits.max_fuel
        paused = pacer.paused_s if pacer is not None else 0.0
        if error is None and ctx.abort is not None:
            error = ctx.abort
        if error is not None:
            details = describe_context(ctx) | {"fuel_used": fuel_used, "elapsed_s": elapsed, "cpu_s": cpu,
                                               "paused_s": paused, "module": module.name,
                                               "digest": module.digest}
            # The traceback keeps this frame, and ``error`` here would make a cycle that holds
            # the store until interpreter shutdown, when freeing it calls WASI output callbacks
            # into a dying Python (a Rust panic). Drop both before the exception leaves.
            del store, instance, result
            failure, error = _with_module(error, module.name, details), None
            try:
                raise failure
            finally:
                del failure
        return result, fuel_used, elapsed, cpu, paused  # type: ignore[return-value]

    def _pace(self) -> int | None:
        """The paced run on this thread: ticks until its next check, or ``None``
        to stop it (the reason in its ``ctx.abort``)."""
        pacer: Pacer | None = getattr(self._local, "pacer", None)
        if pacer is None:
            return None
        try:
            return pacer.on_epoch()
        except BaseException as exc:
            if pacer.ctx.abort is None:
                pacer.ctx.abort = GuestTrapError(
                    f"host error while pacing the run: {type(exc).__name__}: {exc}")
            return None


def _unlink(exc: BaseException) -> None:
    """Drop an engine exception's traceback: wasmtime-py's frames in it hold the
    store in a reference cycle that only a full GC (or interpreter shutdown,
    where it panics) would free."""
    exc.__traceback__ = None


def _memory_bytes(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int:
    if instance is None:
        return 0
    try:
        mem = instance.exports(store).get("memory")
        return mem.data_len(store) if isinstance(mem, wasmtime.Memory) else 0
    except (wasmtime.WasmtimeError, ValueError):
        return 0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
