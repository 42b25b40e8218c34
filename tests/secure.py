"""Certificates and engines with TLS and authentication, for the security tests.

Everything is made here with ``cryptography`` (through :mod:`infrafabric.pki`)
and served by real ``nats-server`` and ``etcd`` processes.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infrafabric import pki
from infrafabric.bus.servers import EtcdServer, NatsServer


@dataclass
class Pki:
    """A fleet CA, an unrelated CA, and certificates signed by the first."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    @classmethod
    def make(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca, other = pki.make_ca(), pki.make_ca("someone else's CA")
        server = pki.issue(ca, "server", hosts=("127.0.0.1", "localhost"))
        client = pki.issue(ca, "alice", client=True)
        expired = pki.issue(ca, "alice", client=True, days=1,
                            not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        stranger = pki.issue(other, "mallory", client=True)
        files = {"ca.pem": ca.cert, "other-ca.pem": other.cert, "server.pem": server.cert,
                 "server.key": server.key, "client.pem": client.cert, "client.key": client.key,
                 "expired.pem": expired.cert, "expired.key": expired.key,
                 "stranger.pem": stranger.cert, "stranger.key": stranger.key}
        for name, data in files.items():
            pki.write_private(directory / name, data)
        return cls(directory)

    def client_query(self, *, ca: str = "ca.pem", cert: str | None = "client") -> str:
        query = f"tls_ca={self.path(ca)}"
        if cert:
            query += f"&tls_cert={self.path(cert + '.pem')}&tls_key={self.path(cert + '.key')}"
        return query


def nats_tls(p: Pki) -> NatsServer:
    """nats-server requiring TLS and a client certificate the fleet CA signed."""
    return NatsServer(extra_config=(
        f'tls {{\n  cert_file: "{p.path("server.pem")}"\n  key_file: "{p.path("server.key")}"\n'
        f'  ca_file: "{p.path("ca.pem")}"\n  verify: true\n  timeout: 2\n}}\n'))


NATS_PASSWORD = "alice-s3cret-password"
NATS_TOKEN = "a-token-only-the-operator-knows"


def nats_users(nkey_public: str) -> NatsServer:
    """nats-server with TLS-less user/password and NKEY users (no anonymous access)."""
    return NatsServer(extra_config=(
        "authorization {\n  users = [\n"
        f'    {{user: alice, password: "{NATS_PASSWORD}"}}\n'
        f'    {{nkey: "{nkey_public}"}}\n  ]\n}}\n'))


def nats_token() -> NatsServer:
    return NatsServer(extra_config=f'authorization {{\n  token: "{NATS_TOKEN}"\n}}\n')


ETCD_PASSWORD = "alice-etcd-password"


def etcd_tls(p: Pki, *, client_cert_auth: bool) -> EtcdServer:
    return EtcdServer(tls=(p.path("ca.pem"), p.path("server.pem"), p.path("server.key")),
                      client_cert_auth=client_cert_auth)


async def enable_etcd_auth(server: EtcdServer, p: Pki | None) -> None:
    """Users root and alice (password :data:`ETCD_PASSWORD`), then auth on, through etcd's own API."""
    import aetcd.rpc as rpc
    import grpc

    target = f"127.0.0.1:{server.port}"
    channel = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(p.path("ca.pem").read_bytes()))
               if p is not None else grpc.aio.insecure_channel(target))
    try:
        auth = rpc.AuthStub(channel)
        for user in ("root", "alice"):
            await auth.UserAdd(rpc.AuthUserAddRequest(name=user, password=ETCD_PASSWORD))
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=user, role="root"))
        await auth.AuthEnable(rpc.AuthEnableRequest())
    finally:
        await channel.close()


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], signer: Any) -> str:
    """A NATS JWT (``ed25519-nkey``) of ``claims``, issued and signed by the NKEY ``signer``."""
    import base64
    import hashlib
    import json
    import time

    body = {**claims, "iat": int(time.time()), "iss": signer.public_key.decode()}
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()).decode().rstrip("=")
    signed = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64(
        json.dumps(body).encode())
    return signed + "." + _b64(signer.sign(signed.encode()))


def _keypair(prefix: int) -> tuple[Any, bytes]:
    import nacl.signing
    import nkeys

    seed = nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), prefix)
    return nkeys.from_seed(seed), seed


def nats_operator(directory: Path) -> tuple[NatsServer, Path]:
    """nats-server in operator (JWT) mode, one account with JetStream, and a
    ``.creds`` file for one of its users: what ``nsc`` would make."""
    import nkeys

    operator, _ = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    system, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
    user, user_seed = _keypair(nkeys.PREFIX_BYTE_USER)
    pub = {k: k.public_key.decode() for k in (operator, account, system, user)}
    op_jwt = _jwt({"sub": pub[operator], "name": "fleet-operator",
                   "nats": {"type": "operator", "version": 2, "system_account": pub[system]}}, operator)
    sys_jwt = _jwt({"sub": pub[system], "name": "SYS", "nats": {"type": "account", "version": 2}}, operator)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                 "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1,
                 "consumer": -1}
    acc_jwt = _jwt({"sub": pub[account], "name": "fleet",
                    "nats": {"type": "account", "version": 2, "limits": unlimited}}, operator)
    user_jwt = _jwt({"sub": pub[user], "name": "alice",
                     "nats": {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1,
                              "payload": -1}}, account)
    creds = directory / "alice.creds"
    creds.write_text(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
                     f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n"
                     "------END USER NKEY SEED------\n")
    server = NatsServer(extra_config=(f"operator: {op_jwt}\nsystem_account: {pub[system]}\n"
                                      "resolver: MEMORY\n"
                                      f"resolver_preload: {{\n  {pub[account]}: {acc_jwt}\n"
                                      f"  {pub[system]}: {sys_jwt}\n}}\n"))
    return server, creds
