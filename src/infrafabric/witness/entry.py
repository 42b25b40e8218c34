"""Witness entries and their canonical encoding.

An entry is a JSON object with exactly these members:

========== ========================================================================
seq        integer >= 1, the entry's position in the chain (no gaps)
ts         integer, microseconds since the Unix epoch (UTC) when it was written
component  string, e.g. ``IF.coordinator``
operation  string, e.g. ``task_claimed``
params     object: the operation's parameters, secrets redacted (see below)
actor      string or null: who did it (a swarm id, ``cli``, ...)
trace_id   string or null: groups the entries of one command or request
severity   one of ``debug info notice warning error critical``
entry_id   string: random id chosen by the writer (makes retries idempotent)
prev_hash  64 lowercase hex digits: the previous entry's ``hash``
           (``0`` x 64 for seq 1)
hash       64 lowercase hex digits (see below)
========== ========================================================================

**Canonical encoding** (what ``hash`` covers): the entry without its ``hash``
member, serialised as UTF-8 JSON with object members sorted by key (code point
order), no insignificant whitespace (``,`` and ``:`` separators), non-ASCII
characters written as themselves (not ``\\u`` escapes), and no floating-point
numbers anywhere (params are normalised before hashing: non-integer numbers
become their shortest ``repr`` string). ``hash`` = lowercase hex SHA-256 of
those bytes. In Python: ``json.dumps(obj, sort_keys=True,
separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()``.

**Redaction** happens by construction when an entry is built: any params
member whose name contains ``token``, ``secret``, ``password``, ``passwd``,
``api_key``/``apikey``, ``private_key``, ``credential``, ``authorization`` or
``signature`` (any case, at any depth) is replaced by ``"[redacted]"``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GENESIS",
    "REDACTED",
    "SEVERITIES",
    "WitnessEntry",
    "canonical",
    "entry_hash",
    "normalize",
]

GENESIS = "0" * 64
REDACTED = "[redacted]"
SEVERITIES = ("debug", "info", "notice", "warning", "error", "critical")
_SECRET_NAME = re.compile(
    r"token|secret|passw(or)?d|api[_-]?key|private[_-]?key|credential|authorization|signature",
    re.IGNORECASE,
)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical(obj: Any) -> bytes:
    """The canonical JSON bytes of ``obj`` (see the module docs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def normalize(value: Any, *, redact: bool = True, _name: str = "") -> Any:
    """JSON-safe, float-free, secret-free copy of ``value``."""
    if redact and _name and _SECRET_NAME.search(_name):
        return REDACTED
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): normalize(v, redact=redact, _name=str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [normalize(v, redact=redact, _name=_name) for v in items]
    return str(value)


def entry_hash(fields: dict[str, Any]) -> str:
    """SHA-256 over the canonical encoding of ``fields`` minus ``hash``."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


_ORDER = ("seq", "ts", "component", "operation", "params", "actor", "trace_id", "severity", "entry_id",
          "prev_hash", "hash")
_MEMBERS = frozenset({"seq", "ts", "component", "operation", "params", "actor", "trace_id", "severity",
                      "entry_id", "prev_hash", "hash"})


@dataclass(frozen=True, slots=True)
class WitnessEntry:
    """One link of the chain (see the module docs for each field)."""

    seq: int
    ts: int
    component: str
    operation: str
    params: dict[str, Any]
    actor: str | None
    trace_id: str | None
    severity: str
    entry_id: str
    prev_hash: str
    hash: str

    @classmethod
    def build(cls, *, seq: int, prev_hash: str, component: str, operation: str,
              params: dict[str, Any] | None = None, actor: str | None = None,
              trace_id: str | None = None, severity: str = "info", entry_id: str | None = None,
              ts: int | None = None) -> WitnessEntry:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        fields: dict[str, Any] = {
            "seq": seq, "ts": ts if ts is not None else time.time_ns() // 1000,
            "component": component, "operation": operation,
            "params": normalize(dict(params or {})), "actor": actor, "trace_id": trace_id,
            "severity": severity, "entry_id": entry_id or secrets.token_hex(8), "prev_hash": prev_hash,
        }
        return cls(**fields, hash=entry_hash(fields))

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies params, and verify calls this per entry
        return {name: getattr(self, name) for name in _ORDER}

    def to_json(self) -> bytes:
        return canonical(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> WitnessEntry:
        """Parse a stored entry (ValueError if it is not a well-formed entry)."""
        return cls.from_dict(json.loads(data))

    @classmethod
    def from_dict(cls, obj: Any) -> WitnessEntry:
        if not isinstance(obj, dict) or obj.keys() != _MEMBERS:
            raise ValueError("not a witness entry: members differ")
        return cls(**obj)

    def problems(self) -> list[str]:
        """What is wrong with this entry on its own (hash, field types)."""
        out = []
        if not isinstance(self.seq, int) or self.seq < 1:
            out.append(f"bad seq {self.seq!r}")
        if not isinstance(self.prev_hash, str) or not _HEX64.fullmatch(self.prev_hash):
            out.append("prev_hash is not 64 hex digits")
        body = {name: getattr(self, name) for name in _ORDER if name != "hash"}
        if self.hash != hashlib.sha256(canonical(body)).hexdigest():
            out.append("hash does not match the entry's contents (edited)")
        return out

    @property
    def time(self) -> float:
        return self.ts / 1_000_000
