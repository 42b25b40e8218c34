"""Guests at full speed: limits enforced from outside a worker process.

Every limit the in-process :class:`~infrafabric.chassis.sandbox.Sandbox`
keeps on the wall clock and the CPU share rests on a check wasmtime compiles
into each function entry and loop back-edge of the guest (epoch
interruption). On most code that check is free, but an interpreter such as
CPython runs one loop iteration per bytecode, and there it costs 16-18 %
(``ifctl bench chassis``). No wasmtime mechanism stops a guest without some
such check.

:class:`ProcessSandbox` runs each task in a long-lived worker process whose
engine compiles no check at all, and keeps the limits from the parent:

* wall clock — the parent waits for the answer until the deadline, then kills
  the worker (:class:`SandboxTimeoutError`); the next run starts a new one;
* CPU share (``max_cpu_percent``) — every :data:`~infrafabric.chassis.sandbox.PACE_SLICE_S`
  the parent reads the worker's CPU time (``/proc/PID/schedstat``) and, when
  the run is ahead of its share, stops the worker (``SIGSTOP``) until it is
  back within it (``SIGCONT``);
* memory — the store's limit, in the worker, as in-process;
* instructions (``max_fuel``) — fuel, in the worker, as in-process;
* API calls — the worker's token bucket, and the parent's, which performs
  every ``api_call`` (gate and transport run here, never in the worker);
* a host function that ends the run (a rate limit) raises a trap in the
  worker, where runs are one at a time.

A worker serves one run at a time and then waits for the next; concurrent
runs get workers of their own. Worker and parent talk over two private pipes
with length-prefixed JSON (never pickle); the module's bytes cross once per
worker, and the worker loads its compiled form from the shared disk cache.
Starting a worker costs a Python start (about 0.3-0.5 s), paid once, before
the first run's clock starts; a run that is killed costs the next one a
start. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from infrafabric.chassis.hostapi import ApiGate, TokenBucket, Transport
from infrafabric.chassis.models import CompileLimits, ResourceLimits, WasiGrants
from infrafabric.chassis.sandbox import (
    PACE_SLICE_S,
    CacheStats,
    CommandResult,
    CompiledModule,
    Sandbox,
    TaskResult,
    default_cache_dir,
)
from infrafabric.chassis.worker import (
    WorkerSandbox,
    _b64,
    _child_env,
    _command_result,
    _error_message,
    _perform,
    _rebuild_error,
    _recv,
    _send,
    _task_result,
    _unb64,
)
from infrafabric.errors import (
    ConfigurationError,
    GuestTrapError,
    InfraFabricError,
    SandboxError,
    SandboxTimeoutError,
)

__all__ = ["ProcessSandbox"]

log = logging.getLogger(__name__)

_CHILD = "import sys; from infrafabric.chassis.process import serve; sys.exit(serve(sys.argv[1:]))"
#: how long a new worker may take to start and say it is ready
_START_TIMEOUT_S = 60.0
#: slack past the deadline for the worker's own report of it (a guest asleep in WASI ends itself)
_REPORT_GRACE_S = 0.05


def _cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far: ``/proc/PID/schedstat`` (nanoseconds),
    else ``/proc/PID/stat`` (clock ticks)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as fh:
            return int(fh.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(eq=False)  # compared and hashed by identity: the pool keeps them in sets
class _Worker:
    proc: subprocess.Popen[bytes]
    to_child: BinaryIO
    from_child: BinaryIO
    errlog: IO[bytes]
    #: digests whose bytes this worker has been sent
    known: set[str] = field(default_factory=set)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.proc.wait()
        for stream in (self.to_child, self.from_child, self.errlog):
            with contextlib.suppress(OSError):
                stream.close()

    def stderr_tail(self) -> str:
        try:
            self.errlog.seek(0)
            return self.errlog.read()[-2000:].decode("utf-8", errors="replace").strip()
        except (OSError, ValueError):
            return ""


class ProcessSandbox:
    """The :class:`~infrafabric.chassis.sandbox.Sandbox` interface, each run in a
    worker process that compiles no check into guest code (see the module
    docstring).

    :param cache_dir: the compiled-module cache, shared with the workers.
    :param compile_limits: bounds on compiling a module not already cached.
    :param max_idle: workers kept waiting for the next run (default: one per CPU).
    """

    def __init__(self, *, cache_dir: Path | None = None,
                 compile_limits: CompileLimits | None = CompileLimits(),  # noqa: B008 - frozen
                 max_idle: int | None = None, python: str = sys.executable) -> None:
        self._cache_dir = cache_dir or default_cache_dir()
        # compiles exactly what the workers run (no epoch checks), so they find it in the disk cache
        self._compiler = Sandbox(cache_dir=self._cache_dir, compile_limits=compile_limits,
                                 interruptible=False)
        self._python = python
        self._max_idle = max_idle if max_idle is not None else max(os.cpu_count() or 1, 1)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False

    @property
    def cache_dir(self) -> Path | None:
        return self._compiler.cache_dir

    @property
    def stats(self) -> CacheStats:
        """The parent's compile-cache counters."""
        return self._compiler.stats

    def compile(self, source: bytes | str | Path, *, name: str = "module",
                allowed_imports: Collection[tuple[str, str]] | None = None,
                trusted_sha256: str | None = None) -> CompiledModule:
        """Validate and compile, as :meth:`Sandbox.compile`; the workers load the
        compiled form from the disk cache."""
        return self._compiler.compile(source, name=name, allowed_imports=allowed_imports,
                                      trusted_sha256=trusted_sha256)

    def close(self) -> None:
        """Kill every worker, idle or running."""
        with self._lock:
            self._closed = True
            workers = [*self._idle, *self._busy]
            self._idle.clear()
        for worker in workers:
            worker.kill()
        self._compiler.close()

    def __enter__(self) -> ProcessSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers, idle or running."""
        with self._lock:
            return sorted(w.proc.pid for w in [*self._idle, *self._busy] if w.proc.poll() is None)

    def run_command(self, module: CompiledModule, *, argv: Sequence[str] = (), stdin: bytes = b"",
                    limits: ResourceLimits = ResourceLimits(),  # noqa: B008 - frozen model
                    grants: WasiGrants = WasiGrants()) -> CommandResult:  # noqa: B008 - frozen model
        """:meth:`Sandbox.run_command` in a worker process."""
        for grant in grants.directories:
            if not Path(grant.host).is_dir():
                raise ConfigurationError(
                    f"granted directory {grant.host!r} does not exist or is not a directory")
        reply = self._run({"op": "run_command", "argv": list(argv), "stdin": _b64(stdin),
                           "grants": grants.model_dump(mode="json")}, module, limits, None, None)
        return _command_result(reply)

    def run_task(self, module: CompiledModule, payload: Any, *,
                 limits: ResourceLimits = ResourceLimits(),  # noqa: B008 - frozen model
                 gate: ApiGate | None = None, transport: Transport | None = None) -> TaskResult:
        """:meth:`Sandbox.run_task` in a worker process; ``gate`` and ``transport``
        run here, in the parent, on the worker's request."""
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"task payload is not JSON-serializable: {exc}") from exc
        reply = self._run({"op": "run_task", "payload": payload, "has_gate": gate is not None,
                           "has_transport": transport is not None}, module, limits, gate, transport)
        return _task_result(reply)

    # -- workers -----------------------------------------------------------------------------------

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise ConfigurationError("sandbox is closed")
            while self._idle:
                worker = self._idle.pop()
                if worker.proc.poll() is None:
                    self._busy.add(worker)
                    return worker
                worker.kill()
        worker = self._start()
        with self._lock:
            if self._closed:
                worker.kill()
                raise ConfigurationError("sandbox is closed")
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker, *, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = healthy and not self._closed and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.kill()

    def _start(self) -> _Worker:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        env = _child_env()
        errlog = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's stderr, kept while it lives
        try:
            proc = subprocess.Popen(
                [self._python, "-c", _CHILD, str(req_r), str(resp_w), str(self._cache_dir)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog,
                pass_fds=(req_r, resp_w), env=env, cwd="/", close_fds=True)
        except OSError as exc:
            errlog.close()
            for fd in (req_r, req_w, resp_r, resp_w):
                os.close(fd)
            raise SandboxError(f"cannot start a sandbox worker process: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.close(req_r)
            with contextlib.suppress(OSError):
                os.close(resp_w)
        # unbuffered, so select() never misses bytes already read into a buffer
        worker = _Worker(proc, os.fdopen(req_w, "wb"), os.fdopen(resp_r, "rb", buffering=0), errlog)
        ready, _, _ = select.select([worker.from_child], [], [], _START_TIMEOUT_S)
        try:
            if not ready or _recv(worker.from_child).get("op") != "ready":
                raise EOFError("no ready message")
        except (EOFError, OSError, ValueError) as exc:
            tail = worker.stderr_tail()
            worker.kill()
            raise SandboxError(f"the sandbox worker process did not start ({exc})"
                               + (f": {tail}" if tail else "")) from None
        return worker

    # -- one run -----------------------------------------------------------------------------------

    def _run(self, request: dict[str, Any], module: CompiledModule, limits: ResourceLimits,
             gate: ApiGate | None, transport: Transport | None) -> dict[str, Any]:
        if not module._source:
            raise ConfigurationError(f"module {module.name!r} was not compiled by a Sandbox")
        worker = self._take()
        request |= {"digest": module.digest, "name": module.name, "limits": limits.model_dump(mode="json")}
        if module.digest not in worker.known:
            request |= {"source": _b64(module._source), "trusted": module._trusted}
        healthy = False
        try:
            _send(worker.to_child, request)
            reply, paused = self._serve(worker, limits, gate, transport)
            healthy = reply.get("op") in ("result", "error")
        except (EOFError, OSError, ValueError) as exc:
            reply, paused = {"op": "crashed", "reason": f"{type(exc).__name__}: {exc}"}, 0.0
        finally:
            if healthy:
                worker.known.add(module.digest)
            self._give_back(worker, healthy=healthy)
        if reply.get("op") == "result":
            reply["paused_s"] = paused
            return reply
        if reply.get("op") == "error":
            error = _rebuild_error(reply, InfraFabricError, GuestTrapError)
            details = getattr(error, "details", None)
            if isinstance(details, dict):
                details["paused_s"] = paused
            raise error
        raise self._failure(module, worker, reply, limits, paused)

    def _serve(self, worker: _Worker, limits: ResourceLimits, gate: ApiGate | None,
               transport: Transport | None) -> tuple[dict[str, Any], float]:
        """Answer the worker's gate and transport requests until it reports;
        pace it and stop it at the deadline. The report, and the time paused."""
        # the worker rate-limits too; this bucket (with slack for scheduling jitter) guards against a
        # worker that no longer obeys its own limits
        bucket = TokenBucket(limits.max_api_calls_per_second * 1.1,
                             capacity=limits.max_api_calls_per_second + 2)
        pid = worker.proc.pid
        share = limits.max_cpu_percent / 100
        started = time.monotonic()
        deadline = started + limits.max_execution_time_seconds
        cpu0 = _cpu_seconds(pid) if share < 1 else 0.0
        paused = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline + _REPORT_GRACE_S:
                return {"op": "timeout"}, paused
            wait = deadline + _REPORT_GRACE_S - now
            if share < 1 and now < deadline:
                ahead = (_cpu_seconds(pid) - cpu0) / share - (now - started)
                if ahead > 0:
                    pause = min(ahead, deadline - now)
                    os.kill(pid, signal.SIGSTOP)
                    try:
                        time.sleep(pause)
                    finally:
                        os.kill(pid, signal.SIGCONT)
                    paused += pause
                    continue
                wait = min(wait, PACE_SLICE_S)
            ready, _, _ = select.select([worker.from_child], [], [], wait)
            if not ready:
                continue
            message = _recv(worker.from_child)
            op = message.get("op")
            if op in ("result", "error"):
                return message, paused
            if op not in ("gate", "transport"):
                raise ValueError(f"unexpected message {op!r} from the worker")
            if not bucket.try_acquire():
                return {"op": "error", "type": "RateLimitedError",
                        "message": "worker exceeded the api_call rate (enforced by the parent)"}, paused
            _send(worker.to_child, WorkerSandbox._answer(message, gate, transport))

    @staticmethod
    def _failure(module: CompiledModule, worker: _Worker, reply: dict[str, Any], limits: ResourceLimits,
                 paused: float) -> SandboxError:
        details = {"module": module.name, "digest": module.digest, "paused_s": paused, "fuel_used": None}
        error: SandboxError
        if reply.get("op") == "timeout":
            error = SandboxTimeoutError(
                f"module {module.name!r}: guest ran past its {limits.max_execution_time_seconds:g} s "
                "deadline (its worker process was killed)")
        else:
            code = worker.proc.returncode
            how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exited ({reply.get('reason') or code})")
            tail = worker.stderr_tail()
            error = GuestTrapError(f"module {module.name!r}: worker process {how}"
                                   + (f": {tail}" if tail else ""))
        error.details = details  # type: ignore[union-attr]
        return error


# -- the worker side -----------------------------------------------------------------------------------


def _cpu_backstop(limits: ResourceLimits) -> None:
    """``RLIMIT_CPU`` a little past what this run may use, should the parent fail to stop it."""
    import resource

    used = time.process_time()
    soft = math.ceil(used + limits.max_execution_time_seconds) + 5
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def serve(argv: Sequence[str]) -> int:
    """Worker entry point: ``REQUEST_FD RESPONSE_FD CACHE_DIR``. Says ``ready``,
    then runs one request at a time until the parent closes the pipe."""
    if len(argv) != 3:
        print("usage: python -c '...serve(...)' REQUEST_FD RESPONSE_FD CACHE_DIR", file=sys.stderr)
        return 2
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from_parent = os.fdopen(int(argv[0]), "rb")
    to_parent = os.fdopen(int(argv[1]), "wb")
    sandbox = Sandbox(cache_dir=Path(argv[2]), interruptible=False)
    modules: dict[str, CompiledModule] = {}
    _send(to_parent, {"op": "ready"})
    while True:
        try:
            request = _recv(from_parent)
        except EOFError:
            return 0
        try:
            limits = ResourceLimits.model_validate(request["limits"])
            digest = str(request["digest"])
            module = modules.get(digest)
            if module is None:
                source = _unb64(request["source"])
                trusted = digest if request.get("trusted") else None
                module = modules[digest] = sandbox.compile(source, name=str(request["name"]),
                                                           trusted_sha256=trusted)
            if module.name != request["name"]:  # the same bytes, loaded under another name
                module = dataclasses.replace(module, name=str(request["name"]))
            _cpu_backstop(limits)
            reply = _perform(sandbox, module, request, limits, to_parent, from_parent)
        except Exception as exc:
            reply = {"op": "error"} | _error_message(exc)
            if not isinstance(exc, InfraFabricError):
                reply["type"] = GuestTrapError.__name__
        _send(to_parent, reply)
