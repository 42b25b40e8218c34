"""Recording what agents did: every operation as an invocation and an outcome.

Each agent process writes one JSON-lines file through a :class:`HistoryRecorder`.
An operation is two lines: ``invoke`` (written, flushed and fsynced before the
call is made) and ``return`` (written the same way when the call has returned or
raised). A process killed with SIGKILL therefore loses at most the outcome of the
calls in flight; :func:`load_history` reads those as ``unknown``, which is what
they are. A line cut short by the kill is ignored (and counted).

Outcomes:

* ``ok`` — the operation was acknowledged (a claim won, a debit recorded...);
* ``fail`` — a definite refusal: nothing was written (a claim lost,
  :class:`~infrafabric.errors.NotOwnerError`, a debit without a budget);
* ``unknown`` — it may or may not have taken effect: a
  :class:`~infrafabric.errors.BusTimeoutError`, a connection lost mid-call,
  any unexpected error, cancellation, or a process killed before the outcome
  was written.

Times: ``start``/``end`` are ``time.time()`` (comparable across the processes
of one machine, and with the timestamps the coordinator and governor write);
``start_mono``/``end_mono`` are ``time.monotonic()`` (ordering within a process).
"""

from __future__ import annotations

import enum
import json
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pydantic import JsonValue

from infrafabric.errors import ConfigurationError, NotOwnerError, TaskExistsError, TaskNotFoundError

if TYPE_CHECKING:
    from infrafabric.coordinator import ClaimOutcome, IFCoordinator, Task
    from infrafabric.governor.core import Debit, IFGovernor
    from infrafabric.witness.entry import WitnessEntry
    from infrafabric.witness.log import Witness

__all__ = [
    "DEFINITE_ERRORS",
    "OPS",
    "Call",
    "History",
    "HistoryRecorder",
    "Op",
    "Outcome",
    "classify",
    "load_history",
    "record_claim",
    "recorded_append",
    "recorded_claim",
    "recorded_complete",
    "recorded_debit",
    "recorded_fail",
    "recorded_heartbeat",
    "recorded_release",
]

#: the operations the checker understands (others are recorded and ignored)
OPS = ("claim", "heartbeat", "complete", "fail", "release", "debit", "witness_append")
#: errors raised before anything is written: a definite refusal, not an unknown outcome
DEFINITE_ERRORS: tuple[type[BaseException], ...] = (
    NotOwnerError, TaskNotFoundError, TaskExistsError, ConfigurationError)
SUFFIX = ".jsonl"
_RESULT_FIELDS = ("claim_id", "entry_id", "ledger_key", "seq", "amount")


class Outcome(enum.StrEnum):
    """How an operation ended, as its caller saw it."""

    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


def classify(exc: BaseException) -> Outcome:
    """``fail`` for the errors raised before anything is written
    (:data:`DEFINITE_ERRORS`), ``unknown`` for everything else."""
    return Outcome.FAIL if isinstance(exc, DEFINITE_ERRORS) else Outcome.UNKNOWN


@dataclass(frozen=True)
class Op:
    """One recorded operation: its invocation and (if it came back) its outcome.

    ``end``/``end_mono`` are None when no outcome was recorded (the process died
    mid-call); such an operation is ``unknown``.
    """

    id: str
    process: str
    op: str
    start: float
    start_mono: float
    swarm: str | None = None
    task: str | None = None
    amount: int | None = None
    claim_id: str | None = None
    entry_id: str | None = None
    ledger_key: str | None = None
    seq: int | None = None
    end: float | None = None
    end_mono: float | None = None
    outcome: Outcome = Outcome.UNKNOWN
    error: str | None = None
    detail: dict[str, JsonValue] = field(default_factory=dict)

    @property
    def acknowledged(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def finish(self) -> float:
        """``end``, or +inf when the operation never came back."""
        return float("inf") if self.end is None else self.end

    def describe(self) -> str:
        """One line naming the operation, e.g. ``claim a1.3f:7 by a1 on T03 ok [..]``."""
        parts = [f"{self.op} {self.id}"]
        if self.swarm:
            parts.append(f"by {self.swarm}")
        if self.task:
            parts.append(f"on {self.task}")
        if self.amount is not None:
            parts.append(f"amount {self.amount}")
        if self.claim_id:
            parts.append(f"claim {self.claim_id}")
        if self.entry_id:
            parts.append(f"entry {self.entry_id}")
        end = "?" if self.end is None else f"{self.end:.6f}"
        parts.append(f"{self.outcome.value} [{self.start:.6f} .. {end}]")
        return " ".join(parts)

    def to_dict(self) -> dict[str, JsonValue]:
        return {"id": self.id, "process": self.process, "op": self.op, "swarm": self.swarm,
                "task": self.task, "amount": self.amount, "claim_id": self.claim_id,
                "entry_id": self.entry_id, "ledger_key": self.ledger_key, "seq": self.seq,
                "start": self.start, "end": self.end, "start_mono": self.start_mono,
                "end_mono": self.end_mono, "outcome": self.outcome.value, "error": self.error,
                "detail": self.detail}


@dataclass
class History:
    """Every recorded operation of a run, merged from all processes' files,
    ordered by start time."""

    ops: list[Op] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    #: lines cut short (a process killed mid-write); their operations count as unknown
    partial_lines: int = 0
    #: complete lines that could not be read (skipped)
    bad_lines: int = 0

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def of(self, op: str) -> list[Op]:
        """The operations of one kind (``claim``, ``debit``...)."""
        return [o for o in self.ops if o.op == op]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{op: {outcome: n}}``."""
        out: dict[str, Counter[str]] = {}
        for o in self.ops:
            out.setdefault(o.op, Counter())[o.outcome.value] += 1
        return {k: dict(v) for k, v in sorted(out.items())}

    def to_dict(self) -> dict[str, JsonValue]:
        return {"files": list(self.files), "partial_lines": self.partial_lines,
                "bad_lines": self.bad_lines, "ops": [o.to_dict() for o in self.ops]}


class Call:
    """One operation in flight; finish it with :meth:`ok`, :meth:`fail`,
    :meth:`unknown` or :meth:`error` (exactly once; later calls are ignored).

    Also a context manager: an exception leaving the block is recorded
    (:func:`classify`) and propagates; leaving it normally without an outcome
    records ``ok``."""

    def __init__(self, recorder: HistoryRecorder, op_id: str) -> None:
        self.recorder = recorder
        self.id = op_id
        self.outcome: Outcome | None = None

    def ok(self, **result: JsonValue) -> None:
        """Acknowledged; ``result`` may carry claim_id, entry_id, ledger_key, seq, amount."""
        self._finish(Outcome.OK, None, result)

    def fail(self, reason: str = "", **result: JsonValue) -> None:
        """Definitely refused: nothing was written."""
        self._finish(Outcome.FAIL, reason, result)

    def unknown(self, reason: str = "", **result: JsonValue) -> None:
        """The outcome is unknown: it may or may not have taken effect."""
        self._finish(Outcome.UNKNOWN, reason, result)

    def error(self, exc: BaseException) -> None:
        """Record an exception the call raised (``fail`` or ``unknown``, see :func:`classify`)."""
        self._finish(classify(exc), f"{type(exc).__name__}: {exc}", {})

    def _finish(self, outcome: Outcome, reason: str | None, result: dict[str, JsonValue]) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.recorder._write({"kind": "return", "id": self.id, "outcome": outcome.value,
                              "end": time.time(), "end_mono": time.monotonic(), "error": reason,
                              **result})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.error(exc)
        elif self.outcome is None:
            self.ok()


class HistoryRecorder:
    """Appends one process's operations to ``<directory>/<process>.<session>.jsonl``.

    ``process`` names the agent process (default: host and pid); every recorder
    object adds a random session so a restarted process never reuses an op id.
    Each line is written with one ``write`` and fsynced (``fsync=False`` skips
    that, for speed when a crash need not be survived). Safe to share between
    the asyncio tasks and threads of a process.
    """

    def __init__(self, directory: str | os.PathLike[str], process: str | None = None, *,
                 fsync: bool = True) -> None:
        self.process = process or f"{socket.gethostname()}-{os.getpid()}"
        if not self.process or "/" in self.process or self.process.startswith("."):
            raise ConfigurationError(f"bad process id {self.process!r} for a history file name")
        self.session = secrets.token_hex(3)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{self.process}.{self.session}{SUFFIX}"
        self.fsync = fsync
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()
        self._count = 0

    def begin(self, op: str, *, swarm: str | None = None, task: str | None = None,
              amount: int | None = None, claim_id: str | None = None, entry_id: str | None = None,
              **detail: JsonValue) -> Call:
        """Record the invocation of ``op`` (durably, before the caller makes the call)."""
        with self._lock:
            self._count += 1
            op_id = f"{self.process}.{self.session}:{self._count}"
        self._write({"kind": "invoke", "id": op_id, "process": self.process, "op": op, "swarm": swarm,
                     "task": task, "amount": amount, "claim_id": claim_id, "entry_id": entry_id,
                     "start": time.time(), "start_mono": time.monotonic(), "detail": detail})
        return Call(self, op_id)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            if self._fd is None:
                raise ConfigurationError(f"history recorder {self.path} is closed")
            os.write(self._fd, line)
            if self.fsync:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _read_file(path: Path, history: History) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # no newline at the end: cut short mid-write
        history.partial_lines += 1
    invokes: dict[str, dict[str, Any]] = {}
    returns: dict[str, dict[str, Any]] = {}
    for raw in lines:
        try:
            rec = json.loads(raw)
            kind, op_id = rec["kind"], str(rec["id"])
        except (ValueError, KeyError, TypeError):
            history.bad_lines += 1
            continue
        if kind == "invoke" and isinstance(rec.get("start"), (int, float)):
            invokes[op_id] = rec
        elif kind == "return":
            returns.setdefault(op_id, rec)
        else:
            history.bad_lines += 1
    history.bad_lines += len(returns.keys() - invokes.keys())
    return [(inv, returns.get(op_id)) for op_id, inv in invokes.items()]


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _make_op(inv: dict[str, Any], ret: dict[str, Any] | None) -> Op:
    detail = inv.get("detail")
    op = Op(id=str(inv["id"]), process=str(inv.get("process") or ""), op=str(inv.get("op")),
            start=float(inv["start"]), start_mono=float(inv.get("start_mono") or 0.0),
            swarm=_opt_str(inv.get("swarm")), task=_opt_str(inv.get("task")),
            amount=_opt_int(inv.get("amount")), claim_id=_opt_str(inv.get("claim_id")),
            entry_id=_opt_str(inv.get("entry_id")), detail=detail if isinstance(detail, dict) else {})
    if ret is None:
        return replace(op, error="no outcome recorded (the process died mid-call)")
    try:
        outcome = Outcome(str(ret.get("outcome")))
    except ValueError:
        outcome = Outcome.UNKNOWN
    changes: dict[str, Any] = {"outcome": outcome, "error": _opt_str(ret.get("error")),
                               "end": float(ret["end"]) if isinstance(ret.get("end"), (int, float)) else None,
                               "end_mono": float(ret["end_mono"])
                               if isinstance(ret.get("end_mono"), (int, float)) else None}
    for name in _RESULT_FIELDS:
        if ret.get(name) is not None:
            changes[name] = _opt_int(ret[name]) if name in ("seq", "amount") else str(ret[name])
    return replace(op, **changes)


def load_history(directory: str | os.PathLike[str]) -> History:
    """Merge every recorder file (``*.jsonl``) under ``directory`` into one
    :class:`History`. An invocation without an outcome is ``unknown``."""
    history = History()
    for path in sorted(Path(directory).glob(f"*{SUFFIX}")):
        history.files.append(str(path))
        history.ops.extend(_make_op(inv, ret) for inv, ret in _read_file(path, history))
    history.ops.sort(key=lambda o: (o.start, o.process, o.start_mono))
    return history


# -- recorded calls ------------------------------------------------------------------


async def recorded_claim(rec: HistoryRecorder, coord: IFCoordinator, swarm: str, task: str) -> ClaimOutcome:
    """``coord.try_claim`` recorded: ``ok`` with the claim_id if won, ``fail`` if refused.
    Exceptions are recorded and re-raised."""
    return await record_claim(rec, swarm, task, lambda: coord.try_claim(swarm, task))


async def record_claim(rec: HistoryRecorder, swarm: str, task: str,
                       claim: Callable[[], Awaitable[ClaimOutcome]]) -> ClaimOutcome:
    """Record one claim attempt made by ``claim()`` (see :func:`recorded_claim`)."""
    call = rec.begin("claim", swarm=swarm, task=task)
    try:
        outcome = await claim()
    except BaseException as exc:
        call.error(exc)
        raise
    if outcome.won:
        call.ok(claim_id=outcome.claim_id)
    else:
        call.fail(outcome.reason)
    return outcome


async def recorded_heartbeat(rec: HistoryRecorder, coord: IFCoordinator, swarm: str, task: str,
                             claim_id: str | None) -> float:
    """``coord.heartbeat`` recorded (``fail`` on :class:`NotOwnerError`)."""
    with rec.begin("heartbeat", swarm=swarm, task=task, claim_id=claim_id):
        return await coord.heartbeat(swarm, task, claim_id)


async def recorded_complete(rec: HistoryRecorder, coord: IFCoordinator, swarm: str, task: str,
                            claim_id: str | None, result: JsonValue = None) -> Task:
    """``coord.complete_task`` recorded (``fail`` on :class:`NotOwnerError`)."""
    with rec.begin("complete", swarm=swarm, task=task, claim_id=claim_id):
        return await coord.complete_task(swarm, task, result, claim_id)


async def recorded_fail(rec: HistoryRecorder, coord: IFCoordinator, swarm: str, task: str,
                        claim_id: str | None, error: str = "") -> Task:
    """``coord.fail_task`` recorded."""
    with rec.begin("fail", swarm=swarm, task=task, claim_id=claim_id):
        return await coord.fail_task(swarm, task, error, claim_id)


async def recorded_release(rec: HistoryRecorder, coord: IFCoordinator, swarm: str, task: str,
                           claim_id: str | None) -> Task:
    """``coord.release_task`` recorded."""
    with rec.begin("release", swarm=swarm, task=task, claim_id=claim_id):
        return await coord.release_task(swarm, task, claim_id)


async def recorded_debit(rec: HistoryRecorder, gov: IFGovernor, swarm: str, op: str, amount: int, *,
                         task: str | None = None) -> Debit:
    """``gov.track_cost(swarm, op, amount)`` recorded; ``ok`` carries the ledger key."""
    with rec.begin("debit", swarm=swarm, task=task, amount=amount, operation=op) as call:
        debit = await gov.track_cost(swarm, op, amount, task_id=task)
        call.ok(ledger_key=debit.ledger_key)
        return debit


async def recorded_append(rec: HistoryRecorder, witness: Witness, component: str, operation: str,
                          params: dict[str, Any] | None = None, *, actor: str | None = None,
                          trace_id: str | None = None, severity: str = "info") -> WitnessEntry:
    """``witness.append`` recorded; ``ok`` carries the entry's id and seq."""
    with rec.begin("witness_append", swarm=actor or witness.actor, component=component,
                   operation=operation) as call:
        entry = await witness.append(component, operation, params, actor=actor, trace_id=trace_id,
                                     severity=severity)
        call.ok(entry_id=entry.entry_id, seq=entry.seq)
        return entry
