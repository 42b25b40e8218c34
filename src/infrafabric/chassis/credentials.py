"""Scoped credentials: short-lived, task-scoped tokens kept on the bus as hashes.

A token reads ``ifc_<id>_<secret>``: ``id`` (16 hex digits) names the record,
``secret`` is ``secrets.token_urlsafe(32)`` (256 bits). The token is returned
once, by :meth:`CredentialManager.generate_scoped_credentials`; the bus keeps
only its SHA-256, so a reader of the bus (or of the witness log) can never
present it. Any process on the same bus validates any token.

Layout on the bus:

* ``chassis/creds/<id>`` — :class:`CredentialRecord` (hash, scope, expiry, revocation)

**Allow-list**: an entry ``name/path`` allows exactly that endpoint; an entry
ending in ``/*`` (``name/*``) allows every endpoint below ``name/`` (not
``name`` itself). An empty allow-list allows nothing. Endpoints with empty,
``.`` or ``..`` segments are refused outright.

**Upstream secrets** (API keys of the real services) never reach the guest:
the host transport asks :meth:`CredentialManager.upstream_secret`, which
validates the token and returns the secret named by the endpoint's first
segment from a :class:`SecretProvider`.

Every refusal is reported to the observers as ``credential_refused`` with the
credential's id (``cred_id``) and the reason; never with the token.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import hmac
import os
import re
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex, token_urlsafe
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infrafabric.bus import EventBus
from infrafabric.bus.layout import CREDENTIALS as CREDS
from infrafabric.bus.records import Records
from infrafabric.chassis.models import ENDPOINT_PATTERN
from infrafabric.coordinator.models import TASK_ID_PATTERN
from infrafabric.errors import (
    ConfigurationError,
    CredentialError,
    CredentialExpiredError,
    CredentialRevokedError,
    CredentialScopeError,
    InvalidCredentialError,
)

__all__ = [
    "CREDENTIALS",
    "MAX_TTL_SECONDS",
    "TOKEN_PREFIX",
    "CredentialGate",
    "CredentialManager",
    "CredentialRecord",
    "EnvSecretProvider",
    "FileSecretProvider",
    "ScopedCredentials",
    "SecretProvider",
    "endpoint_allowed",
]

CREDENTIALS = CREDS
TOKEN_PREFIX = "ifc_"
MAX_TTL_SECONDS = 24 * 3600
#: ``async (operation, params) -> None``, e.g. ``Witness.observer("IF.chassis")``
Observer = Callable[[str, dict[str, Any]], Awaitable[None]]

_ID = re.compile(r"[0-9a-f]{16}")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}([0-9a-f]{{16}})_[A-Za-z0-9_-]{{43}}")
_ENDPOINT = re.compile(ENDPOINT_PATTERN)
_NAME = re.compile(TASK_ID_PATTERN)
_SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DUMMY_HASH = hashlib.sha256(b"no such credential").hexdigest()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _segments_ok(path: str) -> bool:
    return all(s not in ("", ".", "..") for s in path.split("/"))


def _check_endpoint(endpoint: str) -> bool:
    return isinstance(endpoint, str) and _ENDPOINT.fullmatch(endpoint) is not None and _segments_ok(endpoint)


def endpoint_allowed(endpoint: str, allowed: Iterable[str]) -> bool:
    """Whether ``endpoint`` is in the allow-list ``allowed`` (see the module docs)."""
    if not _check_endpoint(endpoint):
        return False
    for entry in allowed:
        if entry.endswith("/*"):
            if endpoint.startswith(entry[:-1]):
                return True
        elif endpoint == entry:
            return True
    return False


class CredentialRecord(BaseModel):
    """What the bus holds for one credential: never the token, only its SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    token_sha256: str
    swarm_id: str
    task_id: str
    created_at: float
    ttl_seconds: int
    expires_at: float
    allowed_endpoints: list[str] = Field(default_factory=list)
    revoked: bool = False
    revoked_at: float | None = None
    revoked_by: str | None = None


@dataclass(frozen=True)
class ScopedCredentials:
    """A task-scoped credential (the seeds' ``ScopedCredentials``).

    ``api_token`` is set only on the value that
    :meth:`CredentialManager.generate_scoped_credentials` returns; records
    read back from the bus carry ``None``. It is left out of ``repr``.
    """

    id: str
    swarm_id: str
    task_id: str
    ttl_seconds: int
    allowed_endpoints: tuple[str, ...]
    created_at: float
    expires_at: float
    revoked: bool = False
    revoked_at: float | None = None
    revoked_by: str | None = None
    api_token: str | None = field(default=None, repr=False)

    def expired_at(self, now: float) -> bool:
        """Whether the credential has expired at time ``now`` (expiry instant included)."""
        return now >= self.expires_at

    @property
    def is_expired(self) -> bool:
        """Whether the credential has expired by the wall clock."""
        return self.expired_at(time.time())

    def allows(self, endpoint: str) -> bool:
        """Whether the allow-list admits ``endpoint``."""
        return endpoint_allowed(endpoint, self.allowed_endpoints)

    def as_dict(self, *, include_token: bool = False) -> dict[str, Any]:
        """JSON-ready fields; the token only when asked for (to show it once)."""
        out: dict[str, Any] = {
            "id": self.id, "swarm_id": self.swarm_id, "task_id": self.task_id,
            "ttl_seconds": self.ttl_seconds, "allowed_endpoints": list(self.allowed_endpoints),
            "created_at": self.created_at, "expires_at": self.expires_at, "revoked": self.revoked,
            "revoked_at": self.revoked_at, "revoked_by": self.revoked_by}
        if include_token:
            out["api_token"] = self.api_token
        return out

    @classmethod
    def from_record(cls, record: CredentialRecord, token: str | None = None) -> ScopedCredentials:
        return cls(id=record.id, swarm_id=record.swarm_id, task_id=record.task_id,
                   ttl_seconds=record.ttl_seconds, allowed_endpoints=tuple(record.allowed_endpoints),
                   created_at=record.created_at, expires_at=record.expires_at, revoked=record.revoked,
                   revoked_at=record.revoked_at, revoked_by=record.revoked_by, api_token=token)


class CredentialGate:
    """A synchronous allow-list check for one running task (the sandbox's
    ``ApiGate``), made by :meth:`CredentialManager.gate`.

    ``check`` refuses once the credential is revoked (seen through the bus),
    expired (by the manager's clock) or when the endpoint is not allowed.
    Safe to call from the thread that runs the guest. If the watch behind
    it fails, it fails closed: every later call is refused.
    """

    def __init__(self, credential: ScopedCredentials, clock: Callable[[], float],
                 redact: Callable[[str], str] = str) -> None:
        self.credential = credential
        self.clock = clock
        self._redact = redact
        self.refusals: list[tuple[str, str]] = []
        self._revoked_by: str | None = None
        self._lost: str | None = None
        self._revoked = threading.Event()

    @property
    def revoked(self) -> bool:
        return self._revoked.is_set()

    def _revoke(self, by: str | None) -> None:
        self._revoked_by = by
        self._revoked.set()

    async def wait_revoked(self) -> None:
        """Return once the gate has seen the credential revoked."""
        while not self._revoked.is_set():
            await asyncio.to_thread(self._revoked.wait, 0.05)

    def check(self, endpoint: str) -> None:
        """Return if the call may go ahead; raise a :class:`CredentialError` if not."""
        cred = self.credential
        if self._revoked.is_set():
            if self._lost is not None:
                self.refusals.append((endpoint, "watch lost"))
                raise CredentialError(f"credential {cred.id} cannot be checked: {self._lost}")
            self.refusals.append((endpoint, "revoked"))
            by = f" by {self._revoked_by}" if self._revoked_by else ""
            raise CredentialRevokedError(f"credential {cred.id} was revoked{by}")
        if cred.expired_at(self.clock()):
            self.refusals.append((endpoint, "expired"))
            raise CredentialExpiredError(f"credential {cred.id} expired ({cred.ttl_seconds} s after issue)")
        if not cred.allows(endpoint):
            self.refusals.append((endpoint, "endpoint not allowed"))
            raise CredentialScopeError(
                f"credential {cred.id} does not allow endpoint {self._redact(endpoint)!r}")


# -- upstream secrets ------------------------------------------------------------------------


class SecretProvider(ABC):
    """Where the host finds the real upstream API secrets (the guest never sees them)."""

    @abstractmethod
    def get(self, name: str) -> str:
        """The secret ``name``; :class:`ConfigurationError` naming it if missing."""

    @staticmethod
    def _check_name(name: str) -> str:
        if not isinstance(name, str) or _SECRET_NAME.fullmatch(name) is None or ".." in name:
            raise ConfigurationError(f"invalid secret name {name!r}",
                                     hint="letters, digits, '.', '_' and '-'; starts with a letter or digit")
        return name


class EnvSecretProvider(SecretProvider):
    """Secrets from environment variables: ``name`` is read from
    ``<prefix><NAME>`` with the name upper-cased and ``.``/``-`` turned into ``_``
    (``openai`` -> ``IF_SECRET_OPENAI``)."""

    def __init__(self, prefix: str = "IF_SECRET_", environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = os.environ if environ is None else environ

    def variable(self, name: str) -> str:
        """The environment variable that holds ``name``."""
        return self.prefix + re.sub(r"[.-]", "_", self._check_name(name)).upper()

    def get(self, name: str) -> str:
        var = self.variable(name)
        value = self.environ.get(var)
        if not value:
            raise ConfigurationError(f"secret {name!r} is not set",
                                     hint=f"set the environment variable {var}")
        return value


class FileSecretProvider(SecretProvider):
    """Secrets from files: ``name`` is the file ``<directory>/<name>`` (one
    trailing newline stripped). A file that its group or others may read or
    write is refused, as is a directory that others may write."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def get(self, name: str) -> str:
        path = self.directory / self._check_name(name)
        try:
            dir_mode = os.stat(self.directory).st_mode
            if dir_mode & stat.S_IWOTH:
                raise ConfigurationError(f"secret {name!r}: directory {self.directory} is world-writable",
                                         hint=f"chmod o-w {self.directory}")
            st = os.stat(path)
        except FileNotFoundError:
            raise ConfigurationError(f"secret {name!r} is not set: no file {path}",
                                     hint=f"write it to {path} with mode 0600") from None
        except PermissionError as exc:
            raise ConfigurationError(f"secret {name!r}: cannot read {path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(f"secret {name!r}: {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigurationError(
                f"secret {name!r}: {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must not be readable or writable by group or others",
                hint=f"chmod 600 {path}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"secret {name!r}: cannot read {path}: {exc}") from None
        value = text[:-1] if text.endswith("\n") else text
        if not value:
            raise ConfigurationError(f"secret {name!r}: {path} is empty")
        return value


# -- the manager -----------------------------------------------------------------------------


class CredentialManager:
    """Issue, validate, revoke and purge scoped credentials on the bus.

    Every process's manager is a thin client over ``chassis/creds/``: a
    credential issued in one process validates (or is refused as revoked) in
    every other. ``secrets`` supplies upstream API secrets for
    :meth:`upstream_secret`.
    """

    def __init__(self, bus: EventBus, *, observers: Iterable[Observer] = (),
                 clock: Callable[[], float] = time.time, secrets: SecretProvider | None = None) -> None:
        self.bus = bus
        self._records = Records(bus, CREDENTIALS, CredentialRecord)
        self.observers = list(observers)
        self.clock = clock
        self.secrets = secrets

    # -- issuing ------------------------------------------------------------------------

    async def generate_scoped_credentials(self, swarm_id: str, task_id: str, ttl_seconds: int = 300,
                                          allowed_endpoints: Iterable[str] | None = None
                                          ) -> ScopedCredentials:
        """Issue a credential for ``task_id`` of ``swarm_id``. The returned
        value carries the token; this is the only time it is ever available.

        ``ttl_seconds`` must be an int within 1 s-24 h; ``allowed_endpoints``
        entries must match ``ENDPOINT_PATTERN`` (optionally ending in ``/*``);
        an empty or missing list allows no endpoint. Raises
        :class:`ConfigurationError` naming what is wrong."""
        for what, value in (("swarm_id", swarm_id), ("task_id", task_id)):
            if not isinstance(value, str) or _NAME.fullmatch(value) is None:
                raise ConfigurationError(f"invalid {what} {value!r}")
        if not isinstance(ttl_seconds, int) or isinstance(ttl_seconds, bool) \
                or not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise ConfigurationError(f"ttl_seconds must be an integer within 1-{MAX_TTL_SECONDS}, "
                                     f"got {ttl_seconds!r}")
        if isinstance(allowed_endpoints, str):
            raise ConfigurationError("allowed_endpoints must be a list of endpoints, not a string")
        endpoints: list[str] = []
        for entry in allowed_endpoints or ():
            base = entry[:-2] if isinstance(entry, str) and entry.endswith("/*") else entry
            if not _check_endpoint(base):
                raise ConfigurationError(
                    f"invalid allowed endpoint {entry!r}",
                    hint="use 'name' or 'name/sub/path' (letters, digits, . _ : - /), may end in '/*'")
            if entry not in endpoints:
                endpoints.append(entry)
        now = self.clock()
        while True:
            cred_id = token_hex(8)
            token = f"{TOKEN_PREFIX}{cred_id}_{token_urlsafe(32)}"
            record = CredentialRecord(id=cred_id, token_sha256=_hash(token), swarm_id=swarm_id,
                                      task_id=task_id, created_at=now, ttl_seconds=ttl_seconds,
                                      expires_at=now + ttl_seconds, allowed_endpoints=endpoints)
            if await self.bus.create(CREDENTIALS + cred_id, record.model_dump_json()) is not None:
                break
        await self._notify("credentials_generated", {
            "cred_id": cred_id, "swarm_id": swarm_id, "task_id": task_id, "ttl_seconds": ttl_seconds,
            "allowed_endpoints": endpoints, "expires_at": record.expires_at})
        return ScopedCredentials.from_record(record, token)

    # -- checking -----------------------------------------------------------------------

    async def validate(self, token: str, endpoint: str, *, swarm_id: str | None = None,
                       task_id: str | None = None) -> ScopedCredentials:
        """Check ``token`` for a call to ``endpoint`` (and, if given, that it
        belongs to ``swarm_id``/``task_id``); return the credential (without
        the token).

        The hash comparison is constant-time. Raises, in this order of
        checks: :class:`InvalidCredentialError` (unknown or malformed token),
        :class:`CredentialRevokedError`, :class:`CredentialExpiredError`,
        :class:`CredentialScopeError` (other swarm or task, or an endpoint
        outside the allow-list). Every refusal is reported to the observers."""
        rec, _ = await self._authenticate(token, endpoint, swarm_id, task_id)
        if not endpoint_allowed(endpoint, rec.allowed_endpoints):
            shown = _redact(endpoint, token)
            await self._refuse(CredentialScopeError(
                f"credential {rec.id} does not allow endpoint {shown!r}"),
                rec.id, rec, token, endpoint, "endpoint not allowed")
        return ScopedCredentials.from_record(rec)

    async def validate_credentials(self, api_token: str, endpoint: str) -> bool:
        """The seeds' check: True if :meth:`validate` accepts the call, else False."""
        try:
            await self.validate(api_token, endpoint)
        except CredentialError:
            return False
        return True

    @contextlib.asynccontextmanager
    async def gate(self, token: str, *, swarm_id: str | None = None, task_id: str | None = None
                   ) -> AsyncIterator[CredentialGate]:
        """Validate ``token`` (all but the endpoint) once, then yield a
        :class:`CredentialGate` whose synchronous ``check(endpoint)`` the
        sandbox's ``api_call`` can use from any thread. While the block runs, a
        watch on the record makes a revocation (or purge) elsewhere on the
        bus refuse the next call; refusals are reported to the observers when
        the block ends."""
        rec, revision = await self._authenticate(token, None, swarm_id, task_id)
        gate = CredentialGate(ScopedCredentials.from_record(rec), self.clock,
                              lambda endpoint: _redact(endpoint, token))
        watch = self.bus.watch(CREDENTIALS + rec.id, start_revision=revision + 1)
        await watch.start()

        async def follow() -> None:
            try:
                async for event in watch:
                    if event.key != CREDENTIALS + rec.id:
                        continue
                    new = None if event.value is None else self._parse(event.value)
                    if new is None or new.revoked:
                        gate._revoke(None if new is None else new.revoked_by)
                        return
                lost = "the watch on the bus ended"
            except Exception as exc:
                lost = f"{type(exc).__name__}: {exc}"
            gate._lost = lost  # fail closed: a gate that cannot see revocations refuses
            gate._revoked.set()

        follower = asyncio.create_task(follow())
        try:
            yield gate
        finally:
            follower.cancel()
            await watch.close()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            for endpoint, reason in gate.refusals:
                await self._notify("credential_refused", {
                    "cred_id": rec.id, "swarm_id": rec.swarm_id, "task_id": rec.task_id,
                    "endpoint": _redact(endpoint, token)[:200], "reason": reason})

    async def upstream_secret(self, token: str, endpoint: str, *, swarm_id: str | None = None,
                              task_id: str | None = None) -> str:
        """Validate ``token`` for ``endpoint``, then return the upstream secret
        named by the endpoint's first segment (``openai/chat`` -> ``openai``)
        for the host transport to attach. Never hand it to the guest."""
        if self.secrets is None:
            raise ConfigurationError("this CredentialManager has no SecretProvider",
                                     hint="pass secrets=EnvSecretProvider() or FileSecretProvider(dir)")
        await self.validate(token, endpoint, swarm_id=swarm_id, task_id=task_id)
        return self.secrets.get(endpoint.split("/", 1)[0])

    # -- managing -----------------------------------------------------------------------

    async def get(self, cred_id: str) -> ScopedCredentials | None:
        """The credential with this id (without its token), or None."""
        if not isinstance(cred_id, str) or _ID.fullmatch(cred_id) is None:
            return None
        got = await self._read(cred_id)
        return ScopedCredentials.from_record(got[0]) if got else None

    async def revoke(self, cred_id_or_token: str, *, by: str) -> ScopedCredentials:
        """Revoke a credential, named by its id or by its token (which must
        then match). Idempotent: revoking a revoked credential changes
        nothing. Raises :class:`InvalidCredentialError` if there is none."""
        cred_id = self._id_of(cred_id_or_token)
        revoked_now = False

        def change(rec: CredentialRecord | None) -> CredentialRecord | None:
            nonlocal revoked_now
            if rec is None or (cred_id_or_token.startswith(TOKEN_PREFIX) and not hmac.compare_digest(
                    _hash(cred_id_or_token).encode(), rec.token_sha256.encode())):
                raise InvalidCredentialError(f"no credential {cred_id} to revoke")
            revoked_now = not rec.revoked
            if not revoked_now:
                return None  # revoked already: nothing to write, nothing to witness
            return rec.model_copy(update={"revoked": True, "revoked_at": self.clock(), "revoked_by": by})

        got = await self._records.mutate(cred_id, change)
        assert got is not None
        rec = got.value
        if revoked_now:
            await self._notify("credential_revoked", {"cred_id": cred_id, "swarm_id": rec.swarm_id,
                                                      "task_id": rec.task_id, "by": by})
        return ScopedCredentials.from_record(rec)

    async def rotate(self, cred_id_or_token: str, *, by: str, ttl_seconds: int | None = None
                     ) -> ScopedCredentials:
        """Issue a new credential with the same swarm, task and allow-list
        (and TTL, unless given), then revoke the old one. Returns the new one,
        with its token."""
        cred_id = self._id_of(cred_id_or_token)
        old = await self._read(cred_id)
        if old is None:
            raise InvalidCredentialError(f"no credential {cred_id} to rotate")
        rec = old[0]
        new = await self.generate_scoped_credentials(rec.swarm_id, rec.task_id,
                                                     ttl_seconds or rec.ttl_seconds, rec.allowed_endpoints)
        await self.revoke(cred_id_or_token, by=by)
        return new

    async def list(self, swarm_id: str | None = None, include_expired: bool = False
                   ) -> builtins.list[ScopedCredentials]:
        """Credentials (without tokens), oldest first; revoked ones included
        until they expire, expired ones only if asked for."""
        now = self.clock()
        out: builtins.list[ScopedCredentials] = []
        async for entry in self.bus.scan(CREDENTIALS):
            rec = self._parse(entry.value)
            if rec is None or (swarm_id is not None and rec.swarm_id != swarm_id):
                continue
            if include_expired or now < rec.expires_at:
                out.append(ScopedCredentials.from_record(rec))
        return sorted(out, key=lambda c: (c.created_at, c.id))

    async def purge_expired(self) -> int:
        """Delete every expired record (and unreadable ones); return how many."""
        now = self.clock()
        purged: builtins.list[str] = []
        async for entry in self.bus.scan(CREDENTIALS):
            rec = self._parse(entry.value)
            if (rec is None or now >= rec.expires_at) and await self.bus.delete(entry.key, entry.revision):
                purged.append(entry.key.removeprefix(CREDENTIALS))
        if purged:
            await self._notify("credentials_purged", {"count": len(purged), "cred_ids": purged})
        return len(purged)

    # -- internals ----------------------------------------------------------------------

    async def _authenticate(self, token: str, endpoint: str | None, swarm_id: str | None,
                            task_id: str | None) -> tuple[CredentialRecord, int]:
        """Every check but the endpoint's; the record and its revision."""
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            await self._refuse(InvalidCredentialError("malformed credential token"), None, None,
                               token, endpoint, "malformed")
        cred_id = match.group(1)
        record = await self._read(cred_id)
        stored = record[0].token_sha256 if record else _DUMMY_HASH
        if not hmac.compare_digest(_hash(token).encode(), stored.encode()) or record is None:
            await self._refuse(InvalidCredentialError(f"unknown credential {cred_id}"), cred_id, None,
                               token, endpoint, "unknown")
        rec = record[0]
        if rec.revoked:
            await self._refuse(CredentialRevokedError(
                f"credential {cred_id} was revoked" + (f" by {rec.revoked_by}" if rec.revoked_by else "")),
                cred_id, rec, token, endpoint, "revoked")
        if self.clock() >= rec.expires_at:
            await self._refuse(CredentialExpiredError(
                f"credential {cred_id} expired ({rec.ttl_seconds} s after issue)"),
                cred_id, rec, token, endpoint, "expired")
        if swarm_id is not None and swarm_id != rec.swarm_id:
            await self._refuse(CredentialScopeError(f"credential {cred_id} was not issued to this swarm"),
                               cred_id, rec, token, endpoint, "swarm mismatch")
        if task_id is not None and task_id != rec.task_id:
            await self._refuse(CredentialScopeError(f"credential {cred_id} was not issued for this task"),
                               cred_id, rec, token, endpoint, "task mismatch")
        return record

    @staticmethod
    def _id_of(cred_id_or_token: str) -> str:
        if isinstance(cred_id_or_token, str):
            if _ID.fullmatch(cred_id_or_token):
                return cred_id_or_token
            match = _TOKEN.fullmatch(cred_id_or_token)
            if match:
                return match.group(1)
        raise InvalidCredentialError("not a credential id or token")

    @staticmethod
    def _parse(data: bytes) -> CredentialRecord | None:
        try:
            return CredentialRecord.model_validate_json(data)
        except ValidationError:
            return None

    async def _read(self, cred_id: str) -> tuple[CredentialRecord, int] | None:
        entry = await self.bus.get(CREDENTIALS + cred_id)
        if entry is None:
            return None
        rec = self._parse(entry.value)
        return None if rec is None else (rec, entry.revision)

    async def _refuse(self, error: CredentialError, cred_id: str | None, rec: CredentialRecord | None,
                      token: Any, endpoint: Any, reason: str) -> NoReturn:
        shown = _redact(endpoint, token) if isinstance(endpoint, str) else None if endpoint is None \
            else repr(type(endpoint))
        await self._notify("credential_refused", {
            "cred_id": cred_id, "swarm_id": rec.swarm_id if rec else None,
            "task_id": rec.task_id if rec else None, "endpoint": shown[:200] if shown else None,
            "reason": reason})
        raise error

    async def _notify(self, operation: str, params: dict[str, Any]) -> None:
        for observer in self.observers:
            await observer(operation, params)


def _redact(endpoint: str, token: Any) -> str:
    if isinstance(token, str) and len(token) >= 8:
        endpoint = endpoint.replace(token, "[token]")
        secret = token[len(TOKEN_PREFIX) + 17:]
        if len(secret) >= 8:
            endpoint = endpoint.replace(secret, "[token]")
    return endpoint
