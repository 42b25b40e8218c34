"""Host functions offered to sandboxed guests, and the policy around them.

A guest reaches the outside world only through two imports (see
``docs/chassis-abi.md``):

* ``log(ptr, len)`` — append a UTF-8 line to the task's log, bounded by
  ``ResourceLimits.max_log_bytes``;
* ``api_call(ep_ptr, ep_len, body_ptr, body_len) -> i64`` — call an API
  endpoint. Each call takes a token from the task's :class:`TokenBucket`
  first (an empty bucket ends the task with :class:`RateLimitedError`), then
  the :class:`ApiGate` decides (a :class:`CredentialError` becomes the code
  :data:`API_REFUSED` for the guest), then the :class:`Transport` performs
  it, adding whatever credential the endpoint needs: the guest never holds
  a secret.

Host functions never raise into wasmtime. wasmtime-py passes a Python
exception out of a host function through a module-global slot, which another
thread's failing call may pick up; so a host function that must end the task
records the reason in its :class:`HostContext`, moves the store's epoch
deadline to now so the guest stops at its next epoch check, and the runner
raises the recorded error.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import wasmtime
from wasmtime import _ffi as wffi

from infrafabric.chassis.models import ENDPOINT_PATTERN, ResourceLimits
from infrafabric.errors import (
    CredentialError,
    GuestTrapError,
    RateLimitedError,
    SandboxError,
    SandboxTimeoutError,
)

__all__ = [
    "API_BAD_REQUEST",
    "API_FAILED",
    "API_NO_MEMORY",
    "API_REFUSED",
    "HOST_MODULES",
    "ApiGate",
    "HostContext",
    "TokenBucket",
    "Transport",
    "define_host_functions",
    "define_wasi_poll",
    "describe_context",
]

#: import modules under which the host functions are offered ("env" for toolchains that default to it)
HOST_MODULES: tuple[str, ...] = ("infrafabric", "env")
#: ``api_call`` result: the credential, its scope or the missing transport refused the call
API_REFUSED = -1
#: ``api_call`` result: the transport failed or timed out (the guest may retry)
API_FAILED = -2
#: ``api_call`` result: the endpoint is not a valid UTF-8 endpoint name
API_BAD_REQUEST = -3
#: ``api_call`` result: the guest's ``alloc`` could not provide room for the response
API_NO_MEMORY = -4

_ENDPOINT = re.compile(f"^{ENDPOINT_PATTERN}$")
_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()


class Transport(ABC):
    """Performs an ``api_call`` on behalf of a guest.

    Implementations add the credentials an endpoint needs (the guest never
    sees them) and must honour ``timeout`` (seconds): a guest blocked in a host
    call cannot be interrupted by its deadline, so the runner passes at most
    the task's remaining time.
    """

    @abstractmethod
    def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
        """Call ``endpoint`` with ``body``; return the response body.

        Raise a :class:`CredentialError` to refuse (the guest sees
        :data:`API_REFUSED`), any other exception to fail (:data:`API_FAILED`).
        """


@runtime_checkable
class ApiGate(Protocol):
    """Decides whether the running task may call an endpoint."""

    def check(self, endpoint: str) -> None:
        """Return if ``endpoint`` is allowed; raise a :class:`CredentialError`
        subclass (expired, revoked, out of scope...) if not."""


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, holding at most ``capacity``
    (default ``rate``, at least 1), starting full. Not thread-safe: each task
    owns its own bucket."""

    def __init__(self, rate: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(rate, 1.0))
        self._clock = clock
        self._tokens = self.capacity if rate > 0 else 0.0
        self._last = clock()

    def try_acquire(self) -> bool:
        """Take one token if there is one."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class HostContext:
    """Per-run state behind the host functions (one per store, one thread)."""

    limits: ResourceLimits
    deadline: float  # time.monotonic() value
    gate: ApiGate | None = None
    transport: Transport | None = None
    logs: list[str] = field(default_factory=list)
    log_bytes: int = 0
    log_truncated: bool = False
    api_calls: int = 0
    refusals: list[str] = field(default_factory=list)
    api_errors: list[str] = field(default_factory=list)
    #: the error that must end the run, raised by the runner once wasm returns
    abort: SandboxError | None = None
    #: ``time.monotonic_ns()`` when the run's WASI context was made: the origin of its monotonic clock
    monotonic_origin_ns: int = 0
    #: the engine has no epoch check to stop the guest at, so a host function that ends the run
    #: raises a trap instead (safe only where one thread runs guests: a worker process)
    stop_by_trap: bool = False
    bucket: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.limits.max_api_calls_per_second)

    def log(self, data: bytes) -> None:
        """Record one log line, truncating at the task's byte budget."""
        if self.log_truncated:
            return
        # an empty line still costs one byte, so a log flood cannot grow the list unboundedly
        room = self.limits.max_log_bytes - self.log_bytes
        cost = max(len(data), 1)
        if cost > room:
            self.log_truncated = True
            data = data[:max(room, 0)]
            if not data:
                return
            cost = len(data)
        self.log_bytes += cost
        self.logs.append(data.decode("utf-8", errors="replace"))

    def api_call(self, endpoint_raw: bytes, body: bytes) -> bytes | int:
        """Run the rate limit, gate and transport for one call; return the
        response or a negative ``API_*`` code. Sets :attr:`abort` when the
        task must end (rate limit, deadline)."""
        self.api_calls += 1
        if not self.bucket.try_acquire():
            self.abort = RateLimitedError(
                f"api_call #{self.api_calls} exceeded {self.limits.max_api_calls_per_second} call(s)/s")
            return API_REFUSED
        try:
            endpoint = endpoint_raw.decode("utf-8")
        except UnicodeDecodeError:
            self.api_errors.append("endpoint is not UTF-8")
            return API_BAD_REQUEST
        if not _ENDPOINT.match(endpoint):
            self.api_errors.append(f"invalid endpoint name {endpoint[:80]!r}")
            return API_BAD_REQUEST
        if self.transport is None:
            self.refusals.append(f"{endpoint}: no transport configured")
            return API_REFUSED
        try:
            if self.gate is not None:
                self.gate.check(endpoint)
        except CredentialError as exc:
            self.refusals.append(f"{endpoint}: {type(exc).__name__}: {exc.message}")
            return API_REFUSED
        except Exception as exc:
            self.api_errors.append(f"{endpoint}: gate failed: {type(exc).__name__}: {exc}")
            return API_FAILED
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.abort = SandboxTimeoutError("deadline passed while the guest was waiting on api_call")
            return API_FAILED
        try:
            response = self.transport.call(endpoint, body, remaining)
        except CredentialError as exc:
            self.refusals.append(f"{endpoint}: {type(exc).__name__}: {exc.message}")
            return API_REFUSED
        except Exception as exc:
            self.api_errors.append(f"{endpoint}: {type(exc).__name__}: {exc}")
            return API_FAILED
        if time.monotonic() > self.deadline:
            self.abort = SandboxTimeoutError(f"deadline passed during api_call to {endpoint}")
            return API_FAILED
        return bytes(response)


def _stop_guest(caller: wasmtime.Caller, ctx: HostContext | None) -> None:
    if ctx is not None and ctx.stop_by_trap:
        raise wasmtime.Trap("stopped by the host")
    # wasmtime-py has no public setter on a Caller. An epoch deadline of 0 ticks from now stops the
    # guest at its next check (a function entry or a loop back-edge), metered by fuel or not; a paced
    # run's callback sees the recorded abort and stops it the same way.
    wffi.wasmtime_context_set_epoch_deadline(caller._context(), 0)


def _memory(caller: wasmtime.Caller) -> wasmtime.Memory | None:
    mem = caller.get("memory")
    return mem if isinstance(mem, wasmtime.Memory) else None


def _read(caller: wasmtime.Caller, mem: wasmtime.Memory, ptr: int, length: int) -> bytes | None:
    ptr &= 0xFFFFFFFF
    length &= 0xFFFFFFFF
    if ptr + length > mem.data_len(caller):
        return None
    if length == 0:
        return b""
    return bytes(mem.read(caller, ptr, ptr + length))


def _pack(ptr: int, length: int) -> int:
    packed = (ptr << 32) | length
    return packed - (1 << 64) if packed >= 1 << 63 else packed


#: turns a trap raised by a nested guest call (``alloc``) into the error that ends the task
TrapClassifier = Callable[[wasmtime.Trap, ResourceLimits, int], SandboxError]


def define_host_functions(linker: wasmtime.Linker, current: Callable[[], HostContext | None],
                          classify: TrapClassifier) -> None:
    """Define ``log`` and ``api_call`` under every :data:`HOST_MODULES` name.

    ``current()`` returns the :class:`HostContext` of the run on the calling
    thread (host functions run on the thread that called into wasm);
    ``classify(trap, limits, memory_bytes)`` names a trap raised by the
    guest's ``alloc`` while the host delivers a response.
    """

    def fail(caller: wasmtime.Caller, ctx: HostContext | None, error: SandboxError) -> None:
        if ctx is not None and ctx.abort is None:
            ctx.abort = error
        _stop_guest(caller, ctx)

    def host_log(caller: wasmtime.Caller, ptr: int, length: int) -> None:
        ctx = current()
        try:
            mem = _memory(caller)
            if ctx is None or mem is None:
                fail(caller, ctx, GuestTrapError("log called without a run context or an exported memory"))
                return
            data = _read(caller, mem, ptr, length)
            if data is None:
                fail(caller, ctx, GuestTrapError(f"log({ptr}, {length}) is outside guest memory"))
                return
            ctx.log(data)
        except Exception as exc:  # never let an exception cross into wasmtime (see module docstring)
            fail(caller, ctx, GuestTrapError(f"log failed in the host: {type(exc).__name__}: {exc}"))

    def host_api_call(caller: wasmtime.Caller, ep_ptr: int, ep_len: int, body_ptr: int, body_len: int) -> int:
        ctx = current()
        try:
            mem = _memory(caller)
            if ctx is None or mem is None:
                fail(caller, ctx, GuestTrapError("api_call without a run context or an exported memory"))
                return API_FAILED
            endpoint = _read(caller, mem, ep_ptr, ep_len)
            body = _read(caller, mem, body_ptr, body_len)
            if endpoint is None or body is None:
                fail(caller, ctx, GuestTrapError("api_call arguments are outside guest memory"))
                return API_FAILED
            result = ctx.api_call(endpoint, body)
            if ctx.abort is not None:
                _stop_guest(caller, ctx)
                return API_FAILED
            if isinstance(result, int):
                return result
            return _deliver(caller, ctx, mem, result)
        except Exception as exc:
            fail(caller, ctx, GuestTrapError(f"api_call failed in the host: {type(exc).__name__}: {exc}"))
            return API_FAILED

    def _deliver(caller: wasmtime.Caller, ctx: HostContext, mem: wasmtime.Memory, data: bytes) -> int:
        if not data:
            return 0
        if len(data) > 0xFFFFFFFF:
            ctx.api_errors.append("response larger than 4 GiB")
            return API_NO_MEMORY
        alloc = caller.get("alloc")
        if not isinstance(alloc, wasmtime.Func):
            ctx.api_errors.append("guest exports no alloc function for the response")
            return API_NO_MEMORY
        try:
            ptr = alloc(caller, len(data))
        except wasmtime.Trap as trap:
            fail(caller, ctx, classify(trap, ctx.limits, mem.data_len(caller)))
            return API_NO_MEMORY
        if not isinstance(ptr, int):
            fail(caller, ctx, GuestTrapError("alloc returned a non-integer"))
            return API_NO_MEMORY
        ptr &= 0xFFFFFFFF
        if ptr == 0:
            ctx.api_errors.append(f"guest alloc({len(data)}) returned 0")
            return API_NO_MEMORY
        if ptr + len(data) > mem.data_len(caller):
            fail(caller, ctx, GuestTrapError(f"alloc({len(data)}) returned {ptr}, outside guest memory"))
            return API_NO_MEMORY
        mem.write(caller, data, ptr)
        return _pack(ptr, len(data))

    for module in HOST_MODULES:
        linker.define_func(module, "log", wasmtime.FuncType([_I32, _I32], []), host_log, access_caller=True)
        linker.define_func(module, "api_call", wasmtime.FuncType([_I32] * 4, [_I64]), host_api_call,
                           access_caller=True)


#: WASI preview1 ``poll_oneoff``: sizes and codes (wasi_snapshot_preview1 witx)
_SUBSCRIPTION, _EVENT = 48, 32
_EVENTTYPE_CLOCK, _EVENTTYPE_FD_READ, _EVENTTYPE_FD_WRITE = 0, 1, 2
_CLOCK_REALTIME, _CLOCK_MONOTONIC = 0, 1
_SUBCLOCKFLAGS_ABSTIME = 1
_ERRNO_SUCCESS, _ERRNO_FAULT, _ERRNO_INVAL = 0, 21, 28
#: more subscriptions than this in one call is refused (EINVAL) rather than read
MAX_POLL_SUBSCRIPTIONS = 4096


def define_wasi_poll(linker: wasmtime.Linker, current: Callable[[], HostContext | None]) -> None:
    """Replace WASI's ``poll_oneoff`` with one that honours the run's deadline.

    A guest that sleeps (Python's ``time.sleep``, QuickJS's ``os.sleep`` and
    timers, any ``poll_oneoff`` with a clock) waits inside this host call,
    where epoch interruption cannot reach it: wasmtime's own implementation
    would sleep the whole hour of a ``time.sleep(3600)``. This one sleeps at
    most until the run's wall-clock deadline; if the sleep would outlast it,
    the run ends there with :class:`SandboxTimeoutError`. Descriptors are
    always ready (the sandbox grants only files and the standard streams,
    never a socket), so a poll on them returns at once. ``linker`` must allow
    shadowing (it replaces the definition :meth:`wasmtime.Linker.define_wasi` made).
    """

    def poll_oneoff(caller: wasmtime.Caller, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
        ctx = current()
        mem = _memory(caller)
        if ctx is None or mem is None:
            return _ERRNO_FAULT
        try:
            nsubs &= 0xFFFFFFFF
            if nsubs == 0 or nsubs > MAX_POLL_SUBSCRIPTIONS:
                return _ERRNO_INVAL
            raw = _read(caller, mem, in_ptr, nsubs * _SUBSCRIPTION)
            size = mem.data_len(caller)
            if raw is None or (out_ptr & 0xFFFFFFFF) + nsubs * _EVENT > size \
                    or (nevents_ptr & 0xFFFFFFFF) + 4 > size:
                return _ERRNO_FAULT
            subs = [raw[i * _SUBSCRIPTION:(i + 1) * _SUBSCRIPTION] for i in range(nsubs)]
            ready: list[tuple[bytes, int]] = []  # (userdata, event type)
            waits: list[tuple[float, bytes]] = []
            for sub in subs:
                userdata, tag = sub[0:8], sub[8]
                if tag in (_EVENTTYPE_FD_READ, _EVENTTYPE_FD_WRITE):
                    ready.append((userdata, tag))
                elif tag == _EVENTTYPE_CLOCK:
                    waits.append((_clock_delay(ctx, sub), userdata))
                else:
                    return _ERRNO_INVAL
            if not ready and waits:
                wait = min(w for w, _ in waits)
                left = ctx.deadline - time.monotonic()
                if wait >= left:  # it would sleep past the deadline: sleep to it, then end the run
                    time.sleep(max(left, 0.0))
                    if ctx.abort is None:
                        ctx.abort = SandboxTimeoutError(
                            f"guest slept past its {ctx.limits.max_execution_time_seconds:g} s deadline "
                            f"(it asked for {wait:.3g} s in poll_oneoff)")
                    _stop_guest(caller, ctx)
                else:
                    time.sleep(wait)
                ready = [(u, _EVENTTYPE_CLOCK) for w, u in waits if w <= wait]
            else:
                ready += [(u, _EVENTTYPE_CLOCK) for w, u in waits if w <= 0]
            events = b"".join(userdata + _ERRNO_SUCCESS.to_bytes(2, "little") + bytes([kind]) + bytes(21)
                              for userdata, kind in ready)
            mem.write(caller, events, out_ptr & 0xFFFFFFFF)
            mem.write(caller, len(ready).to_bytes(4, "little"), nevents_ptr & 0xFFFFFFFF)
            return _ERRNO_SUCCESS
        except Exception as exc:  # never let an exception cross into wasmtime (see the module docs)
            if ctx.abort is None:
                ctx.abort = GuestTrapError(f"poll_oneoff failed in the host: {type(exc).__name__}: {exc}")
            _stop_guest(caller, ctx)
            return _ERRNO_FAULT

    linker.define_func("wasi_snapshot_preview1", "poll_oneoff", wasmtime.FuncType([_I32] * 4, [_I32]),
                       poll_oneoff, access_caller=True)


def _clock_delay(ctx: HostContext, sub: bytes) -> float:
    """Seconds until a clock subscription fires (0 if already due)."""
    clock_id = int.from_bytes(sub[16:20], "little")
    timeout_ns = int.from_bytes(sub[24:32], "little")
    if not int.from_bytes(sub[40:42], "little") & _SUBCLOCKFLAGS_ABSTIME:
        return timeout_ns / 1e9
    # the run's monotonic clock counts from when its WASI context was made
    now_ns = time.time_ns() if clock_id == _CLOCK_REALTIME else time.monotonic_ns() - ctx.monotonic_origin_ns
    return max(timeout_ns - now_ns, 0) / 1e9


def describe_context(ctx: HostContext) -> dict[str, Any]:
    """A JSON-safe summary of a run's host-side record (for errors and the worker)."""
    return {
        "logs": list(ctx.logs),
        "log_truncated": ctx.log_truncated,
        "api_calls": ctx.api_calls,
        "refusals": list(ctx.refusals),
        "api_errors": list(ctx.api_errors),
    }

