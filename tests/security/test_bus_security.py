"""Secure connections to real engines: NATS and etcd with TLS (server and
client certificates) and authentication (user/password, token, NKEY), each
refusal naming its cause (exit 3), each bad setting exit 2, no secret ever
printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrafabric.bus import from_url
from infrafabric.bus.security import Security, access_failure
from infrafabric.bus.servers import EtcdServer, NatsServer
from infrafabric.errors import BusAccessError, BusUnavailableError, ConfigurationError
from secure import (
    ETCD_PASSWORD,
    NATS_PASSWORD,
    NATS_TOKEN,
    Pki,
    enable_etcd_auth,
    etcd_tls,
    nats_tls,
    nats_token,
    nats_users,
)

SECRETS = (NATS_PASSWORD, NATS_TOKEN, ETCD_PASSWORD, "wrong-password-123")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def nkey_seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import nacl.signing
    import nkeys

    seed = nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), nkeys.PREFIX_BYTE_USER)
    path = tmp_path_factory.mktemp("nkey") / "user.nk"
    path.write_bytes(seed + b"\n")
    return path, nkeys.from_seed(seed).public_key.decode()


@pytest.fixture(scope="module")
def tls_nats(certs: Pki) -> Iterator[NatsServer]:
    with nats_tls(certs) as server:
        yield server


@pytest.fixture(scope="module")
def users_nats(nkey_seed: tuple[Path, str]) -> Iterator[NatsServer]:
    with nats_users(nkey_seed[1]) as server:
        yield server


@pytest.fixture(scope="module")
def token_nats() -> Iterator[NatsServer]:
    with nats_token() as server:
        yield server


@pytest.fixture(scope="module")
def tls_auth_etcd(certs: Pki) -> Iterator[EtcdServer]:
    """etcd over TLS (server certificate only) with users and auth on; tokens lapse after 1 s."""
    server = etcd_tls(certs, client_cert_auth=False)
    server.extra_args = ["--auth-token", "simple", "--auth-token-ttl", "1"]
    with server:
        import asyncio

        asyncio.run(enable_etcd_auth(server, certs))
        yield server


@pytest.fixture(scope="module")
def cert_etcd(certs: Pki) -> Iterator[EtcdServer]:
    """etcd that requires a client certificate the fleet CA signed."""
    with etcd_tls(certs, client_cert_auth=True) as server:
        yield server


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("IF_BUS_")]:
        monkeypatch.delenv(name)
    return monkeypatch


async def round_trip(url: str) -> None:
    bus = from_url(url)
    await bus.connect()
    try:
        await bus.put("security/probe", b"ok")
        entry = await bus.get("security/probe")
        assert entry is not None and entry.value == b"ok"
    finally:
        await bus.close()


async def refusal(url: str) -> BusAccessError:
    bus = from_url(url)
    with pytest.raises(BusAccessError) as caught:
        await bus.connect()
    await bus.close()
    text = str(caught.value)
    assert not any(secret in text for secret in SECRETS), text
    assert caught.value.exit_code == 3 and not caught.value.transient
    return caught.value


# -- NATS ------------------------------------------------------------------


async def test_nats_over_tls_with_a_client_certificate(tls_nats: NatsServer, certs: Pki,
                                                       clean_env: pytest.MonkeyPatch) -> None:
    await round_trip(f"{tls_nats.url}?{certs.client_query()}")
    # the same from the environment
    clean_env.setenv("IF_BUS_TLS_CA", str(certs.path("ca.pem")))
    clean_env.setenv("IF_BUS_TLS_CERT", str(certs.path("client.pem")))
    clean_env.setenv("IF_BUS_TLS_KEY", str(certs.path("client.key")))
    await round_trip(tls_nats.url)


@pytest.mark.parametrize(("query", "cause"), [
    ("", "requires TLS, and this client does not use it"),
    ("CA_ONLY", "requires a client certificate, and this client gives none"),
    ("WRONG_CA", "is not trusted"),
    ("EXPIRED", "it has expired"),
    ("STRANGER", "refused this client's certificate"),
])
async def test_nats_tls_refusals_name_their_cause(tls_nats: NatsServer, certs: Pki, query: str, cause: str,
                                                  clean_env: pytest.MonkeyPatch) -> None:
    queries = {"": "", "CA_ONLY": certs.client_query(cert=None),
               "WRONG_CA": certs.client_query(ca="other-ca.pem"),
               "EXPIRED": certs.client_query(cert="expired"), "STRANGER": certs.client_query(cert="stranger")}
    q = queries[query]
    error = await refusal(tls_nats.url + (f"?{q}" if q else ""))
    assert cause in error.message
    assert error.hint


@pytest.mark.parametrize(("cert", "cause"), [("stranger", "not signed by a CA it trusts"),
                                             ("expired", "it has expired")])
def test_a_reset_after_the_handshake_is_a_refused_client_certificate(certs: Pki, cert: str,
                                                                       cause: str) -> None:
    """Under TLS 1.3 nats-server judges the client's certificate after the
    client's side of the handshake, and the client may read a connection
    reset instead of the alert: what the server announced (tls_verify) says
    which refusal it was, never "the bus cannot be reached"."""
    options = dict(part.split("=", 1) for part in certs.client_query(cert=cert).split("&"))
    security = Security.from_options("nats", options, env={})
    reset = ConnectionResetError(104, "Connection reset by peer")
    error = access_failure("nats://127.0.0.1:4222", security, reset,
                           server={"tls_required": True, "tls_verify": True})
    assert isinstance(error, BusAccessError)
    assert "refused this client's certificate" in error.message and cause in error.message and error.hint


async def test_nats_user_and_password(users_nats: NatsServer, clean_env: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    assert "requires authentication" in (await refusal(users_nats.url)).message
    clean_env.setenv("IF_BUS_PASSWORD", "wrong-password-123")
    error = await refusal(f"{users_nats.url}?user=alice")
    assert "refused this client's credentials" in error.message and "$IF_BUS_PASSWORD" in error.message
    clean_env.setenv("IF_BUS_PASSWORD", NATS_PASSWORD)
    await round_trip(f"{users_nats.url}?user=alice")
    clean_env.delenv("IF_BUS_PASSWORD")
    secret = tmp_path / "password"
    secret.write_text(NATS_PASSWORD + "\n")
    await round_trip(f"{users_nats.url}?user=alice&password_file={secret}")


async def test_nats_nkey_seed(users_nats: NatsServer, nkey_seed: tuple[Path, str],
                              clean_env: pytest.MonkeyPatch) -> None:
    await round_trip(f"{users_nats.url}?nkey={nkey_seed[0]}")
    clean_env.setenv("IF_BUS_NKEY", str(nkey_seed[0]))
    await round_trip(users_nats.url)


async def test_nats_token(token_nats: NatsServer, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert "requires authentication" in (await refusal(token_nats.url)).message
    clean_env.setenv("IF_BUS_TOKEN", NATS_TOKEN)
    await round_trip(token_nats.url)
    clean_env.delenv("IF_BUS_TOKEN")
    wrong = tmp_path / "token"
    wrong.write_text("wrong-password-123")
    error = await refusal(f"{token_nats.url}?token_file={wrong}")
    assert "refused this client's credentials" in error.message


async def test_a_client_that_asks_for_tls_sends_nothing_to_a_server_without_it(
        users_nats: NatsServer, certs: Pki, nkey_seed: tuple[Path, str],
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("IF_BUS_PASSWORD", NATS_PASSWORD)
    error = await refusal(f"{users_nats.url}?user=alice&tls_ca={certs.path('ca.pem')}")
    assert "does not offer TLS" in error.message
    clean_env.delenv("IF_BUS_PASSWORD")  # nor an NKEY's signature, which a man in the middle could replay
    error = await refusal(f"{users_nats.url}?nkey={nkey_seed[0]}&tls_ca={certs.path('ca.pem')}")
    assert "does not offer TLS" in error.message


# -- etcd ------------------------------------------------------------------


async def test_etcd_over_tls_with_user_and_password(tls_auth_etcd: EtcdServer, certs: Pki,
                                                    clean_env: pytest.MonkeyPatch) -> None:
    url = f"{tls_auth_etcd.url}?tls_ca={certs.path('ca.pem')}"
    assert "requires authentication" in (await refusal(url)).message
    clean_env.setenv("IF_BUS_PASSWORD", "wrong-password-123")
    assert "refused this client's credentials" in (await refusal(f"{url}&user=alice")).message
    clean_env.setenv("IF_BUS_PASSWORD", ETCD_PASSWORD)
    await round_trip(f"{url}&user=alice")
    assert "requires TLS" in (await refusal(f"{tls_auth_etcd.url}?user=alice&connect_timeout=2")).message
    error = await refusal(f"{tls_auth_etcd.url}?user=alice&tls_ca={certs.path('other-ca.pem')}")
    assert "is not trusted" in error.message


async def test_etcd_logs_in_again_when_its_token_lapses(tls_auth_etcd: EtcdServer, certs: Pki,
                                                        clean_env: pytest.MonkeyPatch) -> None:
    import asyncio

    clean_env.setenv("IF_BUS_PASSWORD", ETCD_PASSWORD)
    bus = from_url(f"{tls_auth_etcd.url}?tls_ca={certs.path('ca.pem')}&user=alice")
    await bus.connect()
    try:
        await bus.put("security/lapse", b"1")
        await asyncio.sleep(3)  # the server's token TTL is 1 s
        refused: list[BusUnavailableError] = []
        for _ in range(20):  # the first call after the lapse is refused (transient); a new login follows
            try:
                await bus.put("security/lapse", b"2")
                break
            except BusUnavailableError as exc:
                refused.append(exc)
                await asyncio.sleep(0.1)
        assert refused and all(e.transient and "auth token" in e.message for e in refused)
        entry = await bus.get("security/lapse")
        assert entry is not None and entry.value == b"2"
    finally:
        await bus.close()


@pytest.mark.parametrize(("cert", "cause"), [
    (None, "requires a client certificate, and this client gives none"),
    ("expired", "it has expired"),
    ("stranger", "refused this client's certificate"),
])
async def test_etcd_client_certificates(cert_etcd: EtcdServer, certs: Pki, cert: str | None, cause: str,
                                        clean_env: pytest.MonkeyPatch) -> None:
    await round_trip(f"{cert_etcd.url}?{certs.client_query()}")
    assert cause in (await refusal(f"{cert_etcd.url}?{certs.client_query(cert=cert)}")).message


# -- bad settings: exit 2 before any connection, naming the option ---------


@pytest.mark.parametrize(("url", "env", "named"), [
    ("nats://127.0.0.1:4222?tls_cert=CERT", {}, "needs its private key"),
    ("nats://127.0.0.1:4222?tls_ca=/nonexistent/ca.pem", {}, "URL option tls_ca=/nonexistent/ca.pem"),
    ("nats://127.0.0.1:4222", {"IF_BUS_TLS_CA": "/nonexistent/ca.pem"}, "$IF_BUS_TLS_CA"),
    ("nats://127.0.0.1:4222?tls_ca=KEY", {}, "not a PEM CA bundle"),
    ("nats://127.0.0.1:4222?tls_cert=CA&tls_key=KEY", {}, "not a PEM certificate and its matching"),
    ("nats://127.0.0.1:4222?user=alice", {}, "no password is given"),
    ("nats://127.0.0.1:4222", {"IF_BUS_PASSWORD": "x"}, "no user"),
    ("nats://127.0.0.1:4222?user=alice", {"IF_BUS_PASSWORD": "x", "IF_BUS_TOKEN": "y"}, "two ways"),
    ("nats://127.0.0.1:4222?tls=maybe", {}, "expected 1 or 0"),
    ("etcd://127.0.0.1:2379?nkey=/x", {}, "unknown option 'nkey'"),
    ("etcd://127.0.0.1:2379", {"IF_BUS_NKEY": "/x"}, "NATS only"),
    ("etcd://127.0.0.1:2379", {"IF_BUS_TOKEN": "y"}, "takes no token"),
    ("nats://alice:wrong-password-123@127.0.0.1:4222", {}, "credentials in bus URL"),
    ("nats://127.0.0.1:4222?password=wrong-password-123", {}, "unknown option 'password' in bus URL "
     "'nats://127.0.0.1:4222?password=***'"),
])
def test_bad_security_settings_are_configuration_errors(url: str, env: dict[str, str], named: str,
                                                        certs: Pki, clean_env: pytest.MonkeyPatch) -> None:
    url = url.replace("CERT", str(certs.path("client.pem"))).replace("KEY", str(certs.path("client.key")))
    url = url.replace("=CA", f"={certs.path('ca.pem')}")
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        from_url(url)
    assert named in str(caught.value)
    assert caught.value.exit_code == 2
    assert "wrong-password-123" not in str(caught.value)


def test_secrets_stay_out_of_the_url_the_description_and_the_repr(certs: Pki,
                                                                  clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("IF_BUS_PASSWORD", NATS_PASSWORD)
    bus = from_url(f"nats://127.0.0.1:4222?user=alice&{certs.client_query()}")
    security = bus.security  # type: ignore[attr-defined]
    assert isinstance(security, Security) and security.password == NATS_PASSWORD
    for shown in (str(bus.url), security.describe(), repr(security)):
        assert NATS_PASSWORD not in shown
    assert "user alice (password from $IF_BUS_PASSWORD)" in security.describe()
    assert f"client certificate {certs.path('client.pem')}" in security.describe()


def test_the_cli_says_why_the_engine_refused_it_and_prints_no_secret(users_nats: NatsServer,
                                                                     clean_env: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "IF_BUS_URL": f"{users_nats.url}?user=alice",
           "IF_BUS_PASSWORD": "wrong-password-123"}
    cmd = [sys.executable, "-m", "infrafabric.cli", "board", "show", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "refused this client's credentials" in done.stderr
    assert "wrong-password-123" not in done.stdout + done.stderr
    env["IF_BUS_PASSWORD"] = NATS_PASSWORD
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    assert NATS_PASSWORD not in done.stdout + done.stderr


async def test_nats_creds_file_in_operator_mode(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    from secure import nats_operator

    server, creds = nats_operator(tmp_path)
    with server:
        assert "requires authentication" in (await refusal(server.url)).message
        await round_trip(f"{server.url}?creds={creds}")
        clean_env.setenv("IF_BUS_CREDS", str(creds))
        await round_trip(server.url)
