"""Scoped credentials on memory, NATS and etcd (real servers), and upstream secret providers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.chassis.credentials import (
    CredentialManager,
    EnvSecretProvider,
    FileSecretProvider,
    endpoint_allowed,
)
from infrafabric.chassis.hostapi import ApiGate
from infrafabric.errors import (
    ConfigurationError,
    CredentialError,
    CredentialExpiredError,
    CredentialRevokedError,
    CredentialScopeError,
    InvalidCredentialError,
)
from infrafabric.witness import Witness
from support import Clock, Seen

WORKER = str(Path(__file__).with_name("creds_worker.py"))


async def everything_on_the_bus(bus: EventBus) -> str:
    return "\n".join([f"{e.key}={e.value.decode(errors='replace')}" async for e in bus.scan("")])


async def test_token_is_shown_once_and_only_its_hash_is_stored(bus: EventBus) -> None:
    seen = Seen()
    witness = Witness(bus)
    creds = CredentialManager(bus, observers=[seen, witness.observer("IF.chassis")])
    issued = await creds.generate_scoped_credentials("swarm-a", "T1", 60, ["openai/chat", "search/*"])
    token = issued.api_token
    assert token is not None and token.startswith(f"ifc_{issued.id}_")
    secret = token[len(f"ifc_{issued.id}_"):]
    assert len(secret) == 43  # token_urlsafe(32)
    assert token not in repr(issued) and "api_token" not in issued.as_dict()
    ok = await creds.validate(token, "openai/chat")
    assert ok.id == issued.id and ok.api_token is None and ok.swarm_id == "swarm-a"
    assert (await creds.get(issued.id)) == ok
    assert all(c.api_token is None for c in await creds.list())
    with pytest.raises(CredentialScopeError) as refused:
        await creds.validate(token, f"exfil/{token}")  # the token inside the endpoint is redacted
    assert token not in str(refused.value)
    stored = await everything_on_the_bus(bus)
    assert token not in stored and secret not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    refusal = seen.ops("credential_refused")[-1]
    assert refusal["cred_id"] == issued.id and refusal["reason"] == "endpoint not allowed"
    assert token not in repr(seen.calls) and secret not in repr(seen.calls)
    entries = await witness.get_operations("IF.chassis", "credential_refused")
    assert len(entries) == 1 and entries[0].params["cred_id"] == issued.id
    assert entries[0].actor == "swarm-a"


async def test_comparison_is_constant_time(bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    creds = CredentialManager(bus)
    issued = await creds.generate_scoped_credentials("s", "t", allowed_endpoints=["api"])
    assert issued.api_token is not None
    await creds.validate(issued.api_token, "api")
    assert len(calls) == 1
    forged = issued.api_token[:-1] + ("A" if issued.api_token[-1] != "A" else "B")
    with pytest.raises(InvalidCredentialError):
        await creds.validate(forged, "api")
    unknown = "ifc_0123456789abcdef_" + "x" * 43
    with pytest.raises(InvalidCredentialError):
        await creds.validate(unknown, "api")  # an unknown id still pays for one comparison
    assert len(calls) == 3


async def test_expiry_revocation_scope_and_refusals_are_witnessed(bus: EventBus) -> None:
    clock, seen = Clock(), Seen()
    creds = CredentialManager(bus, observers=[seen], clock=clock)
    a = await creds.generate_scoped_credentials("swarm-a", "T1", 30, ["openai/chat", "search/*"])
    b = await creds.generate_scoped_credentials("swarm-a", "T2", 300, ["openai/chat"])
    assert a.api_token and b.api_token
    assert await creds.validate_credentials(a.api_token, "openai/chat")
    assert await creds.validate_credentials(a.api_token, "search/web/v2")
    scoped = await creds.validate(a.api_token, "openai/chat", swarm_id="swarm-a", task_id="T1")
    assert scoped.task_id == "T1"
    cases: list[tuple[str, str, dict[str, str], type[CredentialError], str]] = [
        (a.api_token, "openai/embeddings", {}, CredentialScopeError, "endpoint not allowed"),
        (a.api_token, "search", {}, CredentialScopeError, "endpoint not allowed"),  # name/* is below name/
        (a.api_token, "search/../admin", {}, CredentialScopeError, "endpoint not allowed"),
        (a.api_token, "openai/chat", {"swarm_id": "swarm-b"}, CredentialScopeError, "swarm mismatch"),
        (a.api_token, "openai/chat", {"task_id": "T2"}, CredentialScopeError, "task mismatch"),
        ("not-a-token", "openai/chat", {}, InvalidCredentialError, "malformed"),
    ]
    for token, endpoint, scope, error, reason in cases:
        with pytest.raises(error):
            await creds.validate(token, endpoint, **scope)
        assert seen.ops("credential_refused")[-1]["reason"] == reason
        if not scope:
            assert not await creds.validate_credentials(token, endpoint)
    clock.now += 29.75
    assert await creds.validate_credentials(a.api_token, "openai/chat")
    clock.now += 0.25  # the expiry instant itself is expired
    with pytest.raises(CredentialExpiredError):
        await creds.validate(a.api_token, "openai/chat")
    assert seen.ops("credential_refused")[-1] == {
        "cred_id": a.id, "swarm_id": "swarm-a", "task_id": "T1", "endpoint": "openai/chat",
        "reason": "expired"}
    revoked = await creds.revoke(b.id, by="operator")
    assert revoked.revoked and revoked.revoked_by == "operator" and revoked.revoked_at == clock.now
    assert (await creds.revoke(b.api_token, by="again")).revoked_by == "operator"  # idempotent
    with pytest.raises(CredentialRevokedError, match="revoked by operator"):
        await creds.validate(b.api_token, "openai/chat")
    assert [p["cred_id"] for p in seen.ops("credential_revoked")] == [b.id]
    with pytest.raises(InvalidCredentialError):
        await creds.revoke("ffffffffffffffff", by="x")
    assert [c.id for c in await creds.list("swarm-a")] == [b.id]  # a expired
    assert {c.id for c in await creds.list(include_expired=True)} == {a.id, b.id}
    assert await creds.list("swarm-z") == []
    assert await creds.purge_expired() == 1
    assert await creds.get(a.id) is None
    with pytest.raises(InvalidCredentialError):
        await creds.validate(a.api_token, "openai/chat")
    clock.now += 300
    assert await creds.purge_expired() == 1 and await creds.list(include_expired=True) == []
    text = repr(seen.calls)
    assert a.api_token not in text and b.api_token not in text


async def test_empty_allow_list_allows_nothing_and_rotation(bus: EventBus) -> None:
    creds = CredentialManager(bus)
    none = await creds.generate_scoped_credentials("s", "t")
    assert none.api_token and none.allowed_endpoints == ()
    assert not await creds.validate_credentials(none.api_token, "anything")
    old = await creds.generate_scoped_credentials("s", "t", 120, ["api/*"])
    assert old.api_token
    new = await creds.rotate(old.api_token, by="rotation")
    assert new.api_token and new.id != old.id
    assert new.allowed_endpoints == ("api/*",) and new.ttl_seconds == 120
    assert await creds.validate_credentials(new.api_token, "api/x")
    with pytest.raises(CredentialRevokedError):
        await creds.validate(old.api_token, "api/x")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"ttl_seconds": 0}, "ttl_seconds"),
    ({"ttl_seconds": 24 * 3600 + 1}, "ttl_seconds"),
    ({"ttl_seconds": 1.5}, "ttl_seconds"),
    ({"allowed_endpoints": ["https://evil.example"]}, "https://evil.example"),
    ({"allowed_endpoints": ["a/../b"]}, "a/../b"),
    ({"allowed_endpoints": ["*"]}, "'\\*'"),
    ({"allowed_endpoints": "api"}, "list"),
])
async def test_bad_requests_are_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    async with connect("memory://") as bus:
        with pytest.raises(ConfigurationError, match=match):
            await CredentialManager(bus).generate_scoped_credentials("s", "t", **kwargs)
        with pytest.raises(ConfigurationError, match="swarm_id"):
            await CredentialManager(bus).generate_scoped_credentials("a/b", "t")


def test_endpoint_allow_list_rules() -> None:
    assert endpoint_allowed("a/b", ["a/b"]) and not endpoint_allowed("a/bc", ["a/b"])
    assert endpoint_allowed("a/b/c", ["a/*"]) and not endpoint_allowed("a", ["a/*"])
    assert not endpoint_allowed("a//b", ["a/*"]) and not endpoint_allowed("a/./b", ["a/*"])
    assert not endpoint_allowed("a", [])


async def test_gate_checks_synchronously_and_sees_revocation(bus: EventBus) -> None:
    clock, seen = Clock(), Seen()
    creds = CredentialManager(bus, observers=[seen], clock=clock)
    issued = await creds.generate_scoped_credentials("s", "T1", 60, ["api/*"])
    assert issued.api_token
    with pytest.raises(CredentialScopeError):
        async with creds.gate(issued.api_token, task_id="T2"):
            pass
    async with creds.gate(issued.api_token, swarm_id="s", task_id="T1") as gate:
        assert isinstance(gate, ApiGate)
        await asyncio.to_thread(gate.check, "api/v1")  # from the guest's thread
        with pytest.raises(CredentialScopeError):
            gate.check("other")
        clock.now += 60
        with pytest.raises(CredentialExpiredError):
            gate.check("api/v1")
        clock.now -= 60
        await CredentialManager(bus).revoke(issued.id, by="elsewhere")  # another client
        await asyncio.wait_for(gate.wait_revoked(), 5)
        with pytest.raises(CredentialRevokedError, match="by elsewhere"):
            await asyncio.to_thread(gate.check, "api/v1")
    reasons = [(p["cred_id"], p["endpoint"], p["reason"]) for p in seen.ops("credential_refused")]
    assert reasons[1:] == [(issued.id, "other", "endpoint not allowed"), (issued.id, "api/v1", "expired"),
                           (issued.id, "api/v1", "revoked")]
    with pytest.raises(CredentialRevokedError):
        async with creds.gate(issued.api_token):
            pass
    fresh = await creds.generate_scoped_credentials("s", "T1", 60, ["api/*"])
    assert fresh.api_token
    async with creds.gate(fresh.api_token) as gate:
        gate.check("api/v1")
        await bus.close()  # the gate can no longer see revocations: it fails closed
        await asyncio.wait_for(gate.wait_revoked(), 5)
        with pytest.raises(CredentialError, match="cannot be checked"):
            gate.check("api/v1")
    assert seen.ops("credential_refused")[-1]["reason"] == "watch lost"


async def test_validation_in_another_process(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        creds = CredentialManager(bus)
        mine = await creds.generate_scoped_credentials("swarm-a", "T1", 60, ["openai/chat"])
        other = await creds.generate_scoped_credentials("swarm-b", "T2", 60, ["search/*"])
        assert mine.api_token and other.api_token
        proc = subprocess.Popen([sys.executable, WORKER, engine_url], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None

        def ask(line: str) -> str:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip()

        try:
            assert await asyncio.to_thread(proc.stdout.readline) == "ready\n"
            assert await asyncio.to_thread(ask, f"validate {mine.api_token} openai/chat") == "ok swarm-a T1"
            assert await asyncio.to_thread(ask, f"validate {mine.api_token} search/web") \
                == "CredentialScopeError"
            await creds.revoke(mine.id, by="test")
            assert await asyncio.to_thread(ask, f"validate {mine.api_token} openai/chat") \
                == "CredentialRevokedError"
            assert await asyncio.to_thread(ask, f"revoke {other.id}") == f"revoked {other.id}"
            with pytest.raises(CredentialRevokedError):
                await creds.validate(other.api_token, "search/web")
            answer = await asyncio.to_thread(ask, "issue swarm-c T3 api")
            assert answer.startswith("issued ifc_")
            theirs = answer.split()[1]
            assert (await creds.validate(theirs, "api")).swarm_id == "swarm-c"
            assert await asyncio.to_thread(ask, "quit") == ""
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


async def test_upstream_secret_is_validated_then_looked_up(bus: EventBus, tmp_path: Path) -> None:
    creds = CredentialManager(bus, secrets=EnvSecretProvider(environ={"IF_SECRET_OPENAI": "sk-real"}))
    issued = await creds.generate_scoped_credentials("s", "t", 60, ["openai/chat"])
    assert issued.api_token
    assert await creds.upstream_secret(issued.api_token, "openai/chat") == "sk-real"
    with pytest.raises(CredentialScopeError):
        await creds.upstream_secret(issued.api_token, "anthropic/messages")
    assert "sk-real" not in await everything_on_the_bus(bus)
    with pytest.raises(ConfigurationError, match="no SecretProvider"):
        await CredentialManager(bus).upstream_secret(issued.api_token, "openai/chat")


def test_env_secret_provider() -> None:
    env = EnvSecretProvider(environ={"IF_SECRET_OPENAI": "sk-1", "IF_SECRET_MY_API_V2": "x",
                                     "IF_SECRET_E": ""})
    assert env.get("openai") == "sk-1" and env.get("my-api.v2") == "x"
    with pytest.raises(ConfigurationError, match="'anthropic' is not set") as missing:
        env.get("anthropic")
    assert "IF_SECRET_ANTHROPIC" in str(missing.value)
    with pytest.raises(ConfigurationError, match="'e' is not set"):
        env.get("e")
    with pytest.raises(ConfigurationError, match="invalid secret name"):
        env.get("../etc")
    assert EnvSecretProvider(prefix="X_", environ={"X_K": "v"}).get("k") == "v"


def test_file_secret_provider_refuses_loose_permissions(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    good = tmp_path / "openai"
    good.write_text("sk-file\n")
    good.chmod(0o600)
    files = FileSecretProvider(tmp_path)
    assert files.get("openai") == "sk-file"
    loose = tmp_path / "loose"
    loose.write_text("x")
    for mode in (0o640, 0o604, 0o620):
        loose.chmod(mode)
        with pytest.raises(ConfigurationError, match=f"'loose'.*mode 0{mode:o}") as refused:
            files.get("loose")
        assert refused.value.hint == f"chmod 600 {loose}"
    with pytest.raises(ConfigurationError, match="'missing' is not set: no file"):
        files.get("missing")
    with pytest.raises(ConfigurationError, match="invalid secret name"):
        files.get("../openai")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigurationError, match="not a regular file"):
        files.get("sub")
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(ConfigurationError, match="is empty"):
        files.get("empty")
    os.chmod(tmp_path, 0o777)
    try:
        with pytest.raises(ConfigurationError, match="world-writable"):
            files.get("openai")
    finally:
        os.chmod(tmp_path, 0o700)
