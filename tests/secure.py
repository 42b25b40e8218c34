"""Certificates and engines with TLS and authentication, for the security tests.

Everything is made here with ``cryptography`` (through :mod:`infrafabric.pki`)
and served by real ``nats-server`` and ``etcd`` processes.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from pathlib import Path

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
