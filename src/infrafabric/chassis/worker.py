"""Worker-process isolation: each run in its own child process.

:class:`WorkerSandbox` has the interface of :class:`~infrafabric.chassis.sandbox.Sandbox`
but runs every ``run_command`` / ``run_task`` in a fresh
``python -m infrafabric.chassis.worker`` child. The wasmtime limits still do
the real work (memory, fuel, epoch deadline, rate limit, all inside the
child); the child adds, as defence in depth against a bug in the engine:

* ``setrlimit`` applied *in the child only* — ``RLIMIT_AS`` (twice the run's
  memory limit, since a growing memory may be copied, plus ``as_headroom`` for
  the interpreter and wasmtime), ``RLIMIT_CPU`` (the deadline plus a margin),
  ``RLIMIT_CORE`` 0. Worker sandboxes use the ``compact_memory`` engine mode
  (no 4 GiB reservation per memory), which is what makes ``RLIMIT_AS``
  tight enough to matter; it costs explicit bounds checks;
* a clean environment (no variable of the parent's except the import path)
  and ``/`` as working directory;
* a wall-clock watchdog in the parent that kills the child.

Child and parent talk over two private pipes with length-prefixed JSON
(never pickle: a compromised child must not be able to run code in the
parent). ``run_task``'s ``gate`` and ``transport`` work across the boundary:
the child forwards each check and call to the parent, which runs them and
answers; the parent also rate-limits those requests itself. A child that dies
without answering is reported as a typed :class:`SandboxError`.

Each run pays a process start (about 0.3-0.5 s); use the in-process
:class:`Sandbox` where that matters.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from infrafabric import errors
from infrafabric.chassis.hostapi import ApiGate, TokenBucket, Transport
from infrafabric.chassis.models import ResourceLimits, WasiGrants
from infrafabric.chassis.sandbox import CommandResult, CompiledModule, Sandbox, TaskResult, default_cache_dir
from infrafabric.errors import (
    ConfigurationError,
    CredentialError,
    GuestTrapError,
    InfraFabricError,
    OutOfMemoryError,
    SandboxError,
    SandboxTimeoutError,
)

__all__ = ["WorkerSandbox"]

#: largest protocol message accepted either way (stdout + stderr of 16 MiB each, base64)
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
#: address space left to the child beyond twice the run's memory limit: the interpreter
#: (about 200 MiB of mappings), wasmtime and compiled code
DEFAULT_AS_HEADROOM = 1024 * 1024 * 1024
#: the errors a child may report, rebuilt by name in the parent (each takes just a message)
_ERROR_TYPES: dict[str, type[InfraFabricError]] = {
    name: cls for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, (SandboxError, CredentialError))
} | {ConfigurationError.__name__: ConfigurationError}


# -- framing -----------------------------------------------------------------------------------------

def _send(stream: BinaryIO, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _recv_exact(stream: BinaryIO, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(stream: BinaryIO) -> dict[str, Any]:
    (size,) = struct.unpack(">I", _recv_exact(stream, 4))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    message = json.loads(_recv_exact(stream, size))
    if not isinstance(message, dict):
        raise ValueError("message is not an object")
    return message


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(value, validate=True)


def _child_env() -> dict[str, str]:
    """A clean environment for a child process: no variable of ours but the import path."""
    return {"PATH": os.defpath, "LC_ALL": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}


def _fuel(value: Any) -> int | None:
    return None if value is None else int(value)


def _error_message(exc: BaseException) -> dict[str, Any]:
    message = exc.message if isinstance(exc, InfraFabricError) else f"{type(exc).__name__}: {exc}"
    return {"type": type(exc).__name__, "message": message, "details": getattr(exc, "details", {})}


def _rebuild_error(reply: dict[str, Any], base: type[InfraFabricError],
                   fallback: type[InfraFabricError]) -> InfraFabricError:
    cls = _ERROR_TYPES.get(str(reply.get("type")), fallback)
    if not issubclass(cls, base):
        cls = fallback
    exc = cls(str(reply.get("message", "")))
    details = reply.get("details")
    if isinstance(details, dict):
        exc.details = details  # type: ignore[attr-defined]
    return exc


# -- the parent side -----------------------------------------------------------------------------------

class WorkerSandbox:
    """:class:`Sandbox` with one child process per run (see the module docstring).

    :param cache_dir: the compiled-module cache, shared with the children.
    :param grace_s: how long past a run's deadline the parent waits before
        killing the child (covers interpreter start-up).
    :param as_headroom: bytes of address space the child may use beyond twice
        the run's memory limit (``RLIMIT_AS``); ``None`` leaves it unset.
    """

    def __init__(self, *, cache_dir: Path | None = None, grace_s: float = 10.0,
                 as_headroom: int | None = DEFAULT_AS_HEADROOM, python: str = sys.executable) -> None:
        self._cache_dir = cache_dir or default_cache_dir()
        self._sandbox = Sandbox(cache_dir=self._cache_dir, compact_memory=True)
        self._grace_s = grace_s
        self._as_headroom = as_headroom
        self._python = python
        self._lock = threading.Lock()
        self._pids: set[int] = set()

    def compile(self, source: bytes | str | Path, *, name: str = "module",
                allowed_imports: Collection[tuple[str, str]] | None = None) -> CompiledModule:
        """Validate and compile in this process (which also fills the disk cache
        the children load from); same contract as :meth:`Sandbox.compile`."""
        return self._sandbox.compile(source, name=name, allowed_imports=allowed_imports)

    def close(self) -> None:
        """Kill any child still running and release the local sandbox."""
        with self._lock:
            pids = list(self._pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._sandbox.close()

    def __enter__(self) -> WorkerSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running_pids(self) -> list[int]:
        """Process ids of the children running right now."""
        with self._lock:
            return sorted(self._pids)

    def run_command(self, module: CompiledModule, *, argv: Sequence[str] = (), stdin: bytes = b"",
                    limits: ResourceLimits = ResourceLimits(),  # noqa: B008 - frozen model
                    grants: WasiGrants = WasiGrants()) -> CommandResult:  # noqa: B008 - frozen model
        """:meth:`Sandbox.run_command` in a child process."""
        reply = self._run({
            "op": "run_command", "argv": list(argv), "stdin": _b64(stdin),
            "grants": grants.model_dump(mode="json"),
        }, module, limits, None, None)
        return _command_result(reply)

    def run_task(self, module: CompiledModule, payload: Any, *,
                 limits: ResourceLimits = ResourceLimits(),  # noqa: B008 - frozen model
                 gate: ApiGate | None = None, transport: Transport | None = None) -> TaskResult:
        """:meth:`Sandbox.run_task` in a child process; ``gate`` and ``transport``
        run here, in the parent, on the child's request."""
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"task payload is not JSON-serializable: {exc}") from exc
        reply = self._run({
            "op": "run_task", "payload": payload, "has_gate": gate is not None,
            "has_transport": transport is not None,
        }, module, limits, gate, transport)
        return _task_result(reply)

    def _run(self, request: dict[str, Any], module: CompiledModule, limits: ResourceLimits,
             gate: ApiGate | None, transport: Transport | None) -> dict[str, Any]:
        if not module._source:
            raise ConfigurationError(f"module {module.name!r} was not compiled by a Sandbox")
        request |= {
            "source": _b64(module._source), "name": module.name, "limits": limits.model_dump(mode="json"),
            "cache_dir": str(self._cache_dir), "as_headroom": self._as_headroom,
        }
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        env = _child_env()
        with tempfile.TemporaryFile() as errlog:
            try:
                proc = subprocess.Popen(
                    [self._python, "-m", "infrafabric.chassis.worker", str(req_r), str(resp_w)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog,
                    pass_fds=(req_r, resp_w), env=env, cwd="/", close_fds=True)
            finally:
                os.close(req_r)
                os.close(resp_w)
            with self._lock:
                self._pids.add(proc.pid)
            to_child = os.fdopen(req_w, "wb")
            # unbuffered, so select() never misses bytes already read into a buffer
            from_child = os.fdopen(resp_r, "rb", buffering=0)
            try:
                _send(to_child, request)
                deadline = time.monotonic() + limits.max_execution_time_seconds + self._grace_s
                reply = self._serve(proc, to_child, from_child, deadline, limits, gate, transport)
            except (EOFError, OSError, ValueError) as exc:
                reply = {"op": "crashed", "reason": f"{type(exc).__name__}: {exc}"}
            finally:
                with self._lock:
                    self._pids.discard(proc.pid)
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                for stream in (to_child, from_child):
                    with contextlib.suppress(OSError):
                        stream.close()
            if reply.get("op") == "result":
                return reply
            if reply.get("op") == "error":
                raise _rebuild_error(reply, InfraFabricError, GuestTrapError)
            errlog.seek(0)
            tail = errlog.read()[-2000:].decode("utf-8", errors="replace").strip()
        raise self._crash_error(module, proc.returncode, str(reply.get("reason", "")), tail, limits)

    def _serve(self, proc: subprocess.Popen[bytes], to_child: BinaryIO, from_child: BinaryIO,
               deadline: float, limits: ResourceLimits, gate: ApiGate | None,
               transport: Transport | None) -> dict[str, Any]:
        # the child rate-limits too; this bucket (with slack for scheduling jitter) guards against a child
        # that no longer obeys its own limits
        bucket = TokenBucket(limits.max_api_calls_per_second * 1.1,
                             capacity=limits.max_api_calls_per_second + 2)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"op": "timeout"}
            ready, _, _ = select.select([from_child], [], [], remaining)
            if not ready:
                return {"op": "timeout"}
            message = _recv(from_child)
            op = message.get("op")
            if op in ("result", "error"):
                return message
            if op not in ("gate", "transport"):
                raise ValueError(f"unexpected message {op!r} from worker")
            if not bucket.try_acquire():
                return {"op": "error", "type": "RateLimitedError",
                        "message": "worker exceeded the api_call rate (enforced by the parent)"}
            _send(to_child, self._answer(message, gate, transport))

    @staticmethod
    def _answer(message: dict[str, Any], gate: ApiGate | None, transport: Transport | None) -> dict[str, Any]:
        endpoint = message.get("endpoint")
        if not isinstance(endpoint, str):
            return {"ok": False, "type": "ValueError", "message": "endpoint must be text"}
        try:
            if message["op"] == "gate":
                if gate is None:
                    return {"ok": True}
                gate.check(endpoint)
                return {"ok": True}
            if transport is None:
                return {"ok": False, "type": "CredentialError", "message": "no transport configured"}
            timeout = float(message.get("timeout", 0))
            body = transport.call(endpoint, _unb64(message.get("body")), max(timeout, 0.0))
            return {"ok": True, "body": _b64(bytes(body))}
        except Exception as exc:
            return {"ok": False} | _error_message(exc)

    def _crash_error(self, module: CompiledModule, returncode: int | None, reason: str, tail: str,
                     limits: ResourceLimits) -> SandboxError:
        prefix = f"module {module.name!r}: worker process"
        if reason == "timeout":
            return SandboxTimeoutError(
                f"{prefix} did not finish within {limits.max_execution_time_seconds:g} s + "
                f"{self._grace_s:g} s grace and was killed")
        if returncode is not None and returncode < 0:
            sig = signal.Signals(-returncode)
            if sig is signal.SIGXCPU:
                return SandboxTimeoutError(f"{prefix} exceeded its CPU time limit (SIGXCPU)")
            return GuestTrapError(f"{prefix} was killed by {sig.name}" + (f": {tail}" if tail else ""))
        detail = reason or f"exited with status {returncode} without a result"
        return GuestTrapError(f"{prefix} failed: {detail}" + (f"\n{tail}" if tail else ""))


# -- the child side ------------------------------------------------------------------------------------

class _PipeGate:
    def __init__(self, to_parent: BinaryIO, from_parent: BinaryIO) -> None:
        self._out, self._in = to_parent, from_parent

    def check(self, endpoint: str) -> None:
        _send(self._out, {"op": "gate", "endpoint": endpoint})
        reply = _recv(self._in)
        if not reply.get("ok"):
            raise _rebuild_error(reply, CredentialError, CredentialError)


class _PipeTransport(Transport):
    def __init__(self, to_parent: BinaryIO, from_parent: BinaryIO) -> None:
        self._out, self._in = to_parent, from_parent

    def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
        _send(self._out, {"op": "transport", "endpoint": endpoint, "body": _b64(body), "timeout": timeout})
        reply = _recv(self._in)
        if reply.get("ok"):
            return _unb64(reply.get("body"))
        if _ERROR_TYPES.get(str(reply.get("type"))) and issubclass(
                _ERROR_TYPES[str(reply["type"])], CredentialError):
            raise _rebuild_error(reply, CredentialError, CredentialError)
        raise RuntimeError(str(reply.get("message", "transport failed")))


def _apply_rlimits(limits: ResourceLimits, as_headroom: int | None) -> None:
    import resource

    cpu = math.ceil(limits.max_execution_time_seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if as_headroom is not None:
        cap = 2 * limits.max_memory_bytes + as_headroom
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _child_run(request: dict[str, Any], to_parent: BinaryIO, from_parent: BinaryIO) -> dict[str, Any]:
    limits = ResourceLimits.model_validate(request["limits"])
    headroom = request.get("as_headroom")
    _apply_rlimits(limits, int(headroom) if headroom is not None else None)
    # this process is limited already (and the parent compiled the module under its compile limits)
    sandbox = Sandbox(cache_dir=Path(request["cache_dir"]), compact_memory=True, compile_limits=None)
    try:
        module = sandbox.compile(_unb64(request["source"]), name=str(request["name"]))
        return _perform(sandbox, module, request, limits, to_parent, from_parent)
    finally:
        sandbox.close()


def _perform(sandbox: Sandbox, module: CompiledModule, request: dict[str, Any], limits: ResourceLimits,
             to_parent: BinaryIO, from_parent: BinaryIO) -> dict[str, Any]:
    """Run one ``run_command`` or ``run_task`` request in a child; the result message."""
    if request["op"] == "run_command":
        cmd = sandbox.run_command(module, argv=[str(a) for a in request["argv"]],
                                  stdin=_unb64(request["stdin"]), limits=limits,
                                  grants=WasiGrants.model_validate(request["grants"]))
        return {"op": "result", "exit_code": cmd.exit_code, "stdout": _b64(cmd.stdout),
                "stderr": _b64(cmd.stderr), "fuel_used": cmd.fuel_used, "elapsed_s": cmd.elapsed_s,
                "cpu_s": cmd.cpu_s, "paused_s": cmd.paused_s,
                "stdout_truncated": cmd.stdout_truncated, "stderr_truncated": cmd.stderr_truncated}
    gate = _PipeGate(to_parent, from_parent) if request["has_gate"] else None
    transport = _PipeTransport(to_parent, from_parent) if request["has_transport"] else None
    task = sandbox.run_task(module, request["payload"], limits=limits, gate=gate, transport=transport)
    return {"op": "result", "output": task.output, "logs": task.logs, "api_calls": task.api_calls,
            "fuel_used": task.fuel_used, "elapsed_s": task.elapsed_s,
            "cpu_s": task.cpu_s, "paused_s": task.paused_s, "log_truncated": task.log_truncated,
            "refusals": task.refusals, "api_errors": task.api_errors}


def _command_result(reply: dict[str, Any]) -> CommandResult:
    return CommandResult(
        exit_code=int(reply["exit_code"]), stdout=_unb64(reply["stdout"]), stderr=_unb64(reply["stderr"]),
        fuel_used=_fuel(reply["fuel_used"]), elapsed_s=float(reply["elapsed_s"]),
        stdout_truncated=bool(reply["stdout_truncated"]), stderr_truncated=bool(reply["stderr_truncated"]),
        cpu_s=float(reply["cpu_s"]), paused_s=float(reply["paused_s"]))


def _task_result(reply: dict[str, Any]) -> TaskResult:
    return TaskResult(
        output=reply["output"], logs=[str(x) for x in reply["logs"]], api_calls=int(reply["api_calls"]),
        fuel_used=_fuel(reply["fuel_used"]), elapsed_s=float(reply["elapsed_s"]),
        log_truncated=bool(reply["log_truncated"]), refusals=[str(x) for x in reply["refusals"]],
        api_errors=[str(x) for x in reply["api_errors"]],
        cpu_s=float(reply["cpu_s"]), paused_s=float(reply["paused_s"]))


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``python -m infrafabric.chassis.worker REQUEST_FD RESPONSE_FD``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m infrafabric.chassis.worker REQUEST_FD RESPONSE_FD", file=sys.stderr)
        return 2
    from_parent = os.fdopen(int(args[0]), "rb")
    to_parent = os.fdopen(int(args[1]), "wb")
    try:
        request = _recv(from_parent)
        reply = _child_run(request, to_parent, from_parent)
    except MemoryError:
        reply = {"op": "error", "type": OutOfMemoryError.__name__,
                 "message": "worker process ran out of address space (RLIMIT_AS)", "details": {}}
    except Exception as exc:
        reply = {"op": "error"} | _error_message(exc)
        if not isinstance(exc, InfraFabricError):
            reply["type"] = GuestTrapError.__name__
    _send(to_parent, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())

