"""HttpTransport against real local HTTP servers (and one real sandboxed guest)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import math
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infrafabric.chassis.credentials import EnvSecretProvider
from infrafabric.chassis.models import ResourceLimits
from infrafabric.chassis.sandbox import Sandbox
from infrafabric.chassis.transport import ApiCallError, ApiTimeoutError, HttpTransport, Route
from infrafabric.errors import ConfigurationError, CredentialScopeError

WAT = Path(__file__).parent / "wat"
SECRET = "sk-test-0123456789abcdef"
SECRETS = EnvSecretProvider(environ={"IF_SECRET_SEARCH": SECRET, "IF_SECRET_BAD": "line\r\nX-Evil: 1"})


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)
    redirect_to: str = ""


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: bytes, *, length: bool = True, message: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        if length:
            self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        state: Server = self.server.state
        stop: threading.Event = self.server.stop
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        parts = self.path.strip("/").split("/")
        auth = self.headers.get("Authorization")
        if "slow" in parts:
            stop.wait(5)
            self._reply(200, b"{}")
        elif "trickle" in parts:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                if stop.wait(0.05):
                    break
                self.wfile.write(b" ")
        elif "status" in parts:
            code = int(parts[parts.index("status") + 1])
            self._reply(code, json.dumps({"auth": auth}).encode(), message=f"Nope {auth}")
        elif "big" in parts or "bigstream" in parts:
            n = int(parts[-1])
            self._reply(200, b"x" * n, length="big" in parts)
        elif "echo-auth-encoded" in parts:  # every way a careless upstream might reflect a header
            token = auth.split(" ", 1)[-1]
            self._reply(200, json.dumps({
                "b64": base64.b64encode(auth.encode()).decode(),
                "b64url": base64.urlsafe_b64encode(b"k=" + token.encode()).decode(),
                "url": urllib.parse.quote(auth, safe=""), "lower": auth.lower(), "upper": token.upper(),
                "hex": token.encode().hex(),
                "first": token[:len(token) // 2], "second": token[len(token) // 2:],
            }).encode())
        elif "echo-auth" in parts:
            self._reply(200, json.dumps({"auth": auth}).encode())
        elif "away" in parts:
            self._reply(302, b"", headers={"Location": state.redirect_to})
        elif "here" in parts:
            self._reply(302, b"", headers={"Location": "/v1/landed"})
        else:
            self._reply(200, json.dumps({"hits": 3, "method": self.command, "path": self.path,
                                         "body": body.decode(), "authorized": auth == f"Bearer {SECRET}",
                                         "api_key": self.headers.get("X-Api-Key") == SECRET}).encode())

    do_GET = do_POST = do_PUT = _handle


def _serve(context: ssl.SSLContext | None = None) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    scheme = "https" if context else "http"
    state = Server(url=f"{scheme}://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    httpd.stop = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.stop.set()  # type: ignore[attr-defined]
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve()


@pytest.fixture
def other() -> Iterator[Server]:
    yield from _serve()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    yield from _serve(context)


def transport(server: Server, path: str = "/v1", **route: Any) -> HttpTransport:
    return HttpTransport({"search": Route(server.url + path, **route)}, secrets=SECRETS)


# -- requests and responses --------------------------------------------------------------------------


def test_endpoint_maps_onto_the_route_base_url(server: Server) -> None:
    t = HttpTransport.from_mapping({"search": {"base_url": server.url + "/v1/"}})
    assert t.url_for("search/web/deep") == server.url + "/v1/web/deep"
    assert t.url_for("search") == server.url + "/v1/"
    out = json.loads(t.call("search/web/deep", b'{"q":"wasm"}', 5))
    assert out["path"] == "/v1/web/deep" and out["method"] == "POST" and out["body"] == '{"q":"wasm"}'
    assert json.loads(t.call("search", b"{}", 5))["path"] == "/v1/"
    assert server.seen[0].headers["Content-Type"] == "application/json"
    assert "Authorization" not in server.seen[0].headers  # the route names no secret


def test_method_and_content_type_come_from_the_route(server: Server) -> None:
    t = transport(server, method="put", content_type="text/plain")
    assert json.loads(t.call("search/x", b"hi", 5))["method"] == "PUT"
    assert server.seen[-1].headers["Content-Type"] == "text/plain"
    get = transport(server, method="GET")
    assert json.loads(get.call("search/x", b"", 5))["method"] == "GET"
    assert server.seen[-1].body == b""


def test_secret_is_added_as_a_header_and_never_shown(server: Server) -> None:
    t = transport(server, secret="search")
    out = json.loads(t.call("search/web", b"{}", 5))
    assert out["authorized"] is True
    assert server.seen[-1].headers["Authorization"] == f"Bearer {SECRET}"
    # an upstream that echoes the header back does not hand the secret to the guest
    echoed = t.call("search/echo-auth", b"{}", 5)
    assert SECRET.encode() not in echoed and json.loads(echoed) == {"auth": "Bearer [redacted]"}
    with pytest.raises(ApiCallError) as info:  # the reason phrase echoes it too
        t.call("search/status/401", b"{}", 5)
    assert info.value.status == 401
    for text in (str(info.value), repr(info.value), repr(t), repr(t.routes)):
        assert SECRET not in text
    reflected = t.call("search/echo-auth-encoded", b"{}", 5)  # JSON-escaped, base64, URL, case, split
    text = reflected.decode().lower()
    for form in (SECRET, base64.b64encode(SECRET.encode()).decode(), urllib.parse.quote(SECRET, safe=""),
                 SECRET.encode().hex(), SECRET[:len(SECRET) // 2], SECRET[len(SECRET) // 2:]):
        assert form.lower() not in text, form
    for k in range(3):  # the secret's base64 at each alignment, in both alphabets
        core = base64.b64encode(b"\0" * k + SECRET.encode()).decode().rstrip("=")
        core = core[-(-8 * k // 6):(8 * (k + len(SECRET))) // 6]
        assert core.lower() not in text and core.replace("+", "-").replace("/", "_").lower() not in text
    bare = transport(server, secret="search", header="X-Api-Key", scheme="")
    assert json.loads(bare.call("search/web", b"{}", 5))["api_key"] is True


def test_secret_that_cannot_be_a_header_value_fails_without_showing_it(server: Server) -> None:
    t = transport(server, secret="bad")
    with pytest.raises(ConfigurationError, match="cannot be sent in an HTTP header") as info:
        t.call("search/web", b"{}", 5)
    assert "Evil" not in str(info.value)
    missing = transport(server, secret="nothere")
    with pytest.raises(ConfigurationError, match="IF_SECRET_NOTHERE"):
        missing.call("search/web", b"{}", 5)
    assert server.seen == []


def test_non_2xx_status_fails_with_the_status(server: Server) -> None:
    t = transport(server)
    for code in (404, 500, 503):
        with pytest.raises(ApiCallError, match=f"HTTP {code}") as info:
            t.call("search/status/" + str(code), b"{}", 5)
        assert info.value.status == code and info.value.endpoint == f"search/status/{code}"
        assert not isinstance(info.value, CredentialScopeError)


def test_response_size_is_capped(server: Server) -> None:
    t = transport(server, max_response_bytes=1000)
    assert t.call("search/big/1000", b"", 5) == b"x" * 1000
    assert t.call("search/bigstream/1000", b"", 5) == b"x" * 1000
    with pytest.raises(ApiCallError, match="max_response_bytes"):
        t.call("search/big/1001", b"", 5)  # refused on its Content-Length
    with pytest.raises(ApiCallError, match="max_response_bytes"):
        t.call("search/bigstream/5000", b"", 5)  # no Content-Length: cut while reading


def test_https_verifies_the_server(tls_server: Server, certificate: tuple[Path, Path]) -> None:
    trusted = HttpTransport({"search": Route(tls_server.url + "/v1", secret="search")}, secrets=SECRETS,
                            ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
    out = json.loads(trusted.call("search/web", b"{}", 5))
    assert out["authorized"] is True and out["path"] == "/v1/web"
    untrusted = HttpTransport({"search": Route(tls_server.url + "/v1", secret="search")}, secrets=SECRETS)
    with pytest.raises(ApiCallError, match="CERTIFICATE_VERIFY_FAILED") as info:
        untrusted.call("search/web", b"{}", 5)
    assert SECRET not in str(info.value) and len(tls_server.seen) == 1


def test_https_timeout_is_honoured(tls_server: Server, certificate: tuple[Path, Path]) -> None:
    t = HttpTransport({"search": Route(tls_server.url)},
                      ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
    with pytest.raises(ApiTimeoutError):
        t.call("search/trickle", b"{}", 0.3)


# -- time limits ---------------------------------------------------------------------------------------


def test_call_timeout_is_honoured(server: Server) -> None:
    t = transport(server)
    with pytest.raises(ApiTimeoutError) as info:  # the server would have answered after 5 s
        t.call("search/slow", b"{}", 0.3)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, ApiCallError)
    with pytest.raises(ApiTimeoutError, match="no time left"):
        t.call("search/web", b"{}", 0)


def test_route_timeout_caps_the_task_time(server: Server) -> None:
    t = transport(server, timeout=0.3)
    with pytest.raises(ApiTimeoutError):  # the task allows 30 s; the server answers after 5 s
        t.call("search/slow", b"{}", 30)


def test_a_trickling_server_cannot_outlast_the_deadline(server: Server) -> None:
    # a byte every 50 ms never trips a per-read socket timeout; the watchdog ends the call
    t = transport(server)
    with pytest.raises(ApiTimeoutError):  # the whole body would take 50 s and then succeed
        t.call("search/trickle", b"{}", 0.4)


# -- what a guest can reach ------------------------------------------------------------------------------


def test_unknown_route_and_bad_endpoints_are_refused(server: Server) -> None:
    t = transport(server)
    for endpoint in ("mail/send", "searchx/web", "search/../admin", "search/./x", "search//x", "search/",
                     "/search", "search/a?b", "http://evil.example/x", ""):
        with pytest.raises(CredentialScopeError):
            t.call(endpoint, b"{}", 5)
    with pytest.raises(CredentialScopeError, match="no route for endpoint 'mail/send'"):
        t.call("mail/send", b"{}", 5)
    assert server.seen == []


def test_redirect_to_another_origin_is_refused(server: Server, other: Server) -> None:
    server.redirect_to = other.url + "/stolen"
    t = transport(server, secret="search", method="GET")
    with pytest.raises(ApiCallError, match="redirect to another origin") as info:
        t.call("search/away", b"", 5)
    assert info.value.status == 302 and SECRET not in str(info.value)
    assert other.seen == []
    # the same origin is fine
    out = json.loads(t.call("search/here", b"", 5))
    assert out["path"] == "/v1/landed" and out["authorized"] is True


def test_environment_proxies_are_ignored_unless_asked_for(server: Server, other: Server,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", other.url)
    monkeypatch.setenv("HTTP_PROXY", other.url)
    assert json.loads(transport(server).call("search/web", b"{}", 5))["path"] == "/v1/web"
    assert other.seen == []
    proxied = HttpTransport({"search": Route(server.url + "/v1")}, use_env_proxy=True)
    proxied.call("search/web", b"{}", 5)  # the "proxy" answers itself
    assert [s.path for s in other.seen] == [server.url + "/v1/web"]


def test_connection_refused_is_a_failure_not_a_refusal() -> None:
    t = HttpTransport({"search": Route("http://127.0.0.1:1/v1")})
    with pytest.raises(ApiCallError, match="request failed") as info:
        t.call("search/web", b"{}", 5)
    assert info.value.status is None and not isinstance(info.value, ApiTimeoutError)


# -- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "where"), [
    ({"base_url": "ftp://h/x"}, "routes.search.base_url"),
    ({"base_url": "https://user:pw@h/x"}, "routes.search.base_url"),
    ({"base_url": "https://h/x?q=1"}, "routes.search.base_url"),
    ({"base_url": "https://h/x#f"}, "routes.search.base_url"),
    ({"base_url": "https://h:99999/x"}, "routes.search.base_url"),
    ({"base_url": "https:///x"}, "routes.search.base_url"),
    ({"base_url": "https://h/a b"}, "routes.search.base_url"),
    ({"base_url": 42}, "routes.search.base_url"),
    ({}, "routes.search.base_url"),
    ({"base_url": "https://h", "xyz": 1}, "routes.search.xyz"),
    ({"base_url": "https://h", "secret": "../etc/passwd"}, "routes.search.secret"),
    ({"base_url": "https://h", "secret": 7}, "routes.search.secret"),
    ({"base_url": "https://h", "header": "Bad Header"}, "routes.search.header"),
    ({"base_url": "https://h", "header": "Host"}, "routes.search.header"),
    ({"base_url": "https://h", "scheme": "Bearer x"}, "routes.search.scheme"),
    ({"base_url": "https://h", "method": "TRACE"}, "routes.search.method"),
    ({"base_url": "https://h", "content_type": "a\nb"}, "routes.search.content_type"),
    ({"base_url": "https://h", "max_response_bytes": 0}, "routes.search.max_response_bytes"),
    ({"base_url": "https://h", "max_response_bytes": True}, "routes.search.max_response_bytes"),
    ({"base_url": "https://h", "max_response_bytes": "1"}, "routes.search.max_response_bytes"),
    ({"base_url": "https://h", "timeout": 0}, "routes.search.timeout"),
    ({"base_url": "https://h", "timeout": math.nan}, "routes.search.timeout"),
    ({"base_url": "https://h", "timeout": "5"}, "routes.search.timeout"),
])
def test_bad_route_config_is_refused_naming_the_field(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        HttpTransport.from_mapping({"search": spec}, secrets=SECRETS)
    assert str(info.value).startswith(where + ":")
    assert "pw" not in str(info.value)


def test_bad_config_shapes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="routes: expected a mapping"):
        HttpTransport.from_mapping(["search"])
    with pytest.raises(ConfigurationError, match=r"routes\.search: expected a mapping"):
        HttpTransport.from_mapping({"search": "https://h"})
    with pytest.raises(ConfigurationError, match="invalid route name"):
        HttpTransport.from_mapping({"a/b": {"base_url": "https://h"}})
    with pytest.raises(ConfigurationError, match=r"routes\.search\.secret: .*no SecretProvider"):
        HttpTransport.from_mapping({"search": {"base_url": "https://h", "secret": "search"}})
    with pytest.raises(ConfigurationError, match=r"routes\.x: expected a Route"):
        HttpTransport({"x": "https://h"})  # type: ignore[dict-item]


def test_from_mapping_builds_normalised_routes() -> None:
    t = HttpTransport.from_mapping({"search": {"base_url": "https://api.example.com/v1", "secret": "search",
                                               "method": "put", "timeout": 5, "max_response_bytes": 10}},
                                   secrets=SECRETS)
    assert t.routes["search"] == Route("https://api.example.com/v1", secret="search", method="PUT",
                                       timeout=5.0, max_response_bytes=10)
    assert repr(t) == "HttpTransport(search=https://api.example.com/v1)"


# -- end to end ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(cache_dir=tmp_path_factory.mktemp("modules")) as sb:
        yield sb


def test_guest_api_call_goes_over_http(server: Server, sandbox: Sandbox) -> None:
    module = sandbox.compile(WAT / "task_api.wat", name="api")
    limits = ResourceLimits(max_execution_time_seconds=5)
    result = sandbox.run_task(module, 2, transport=transport(server, secret="search"), limits=limits)
    assert result.output == {"hits": 3, "method": "POST", "path": "/v1/web", "body": "2",
                             "authorized": True, "api_key": False}
    assert result.api_calls == 2 and not result.refusals and not result.api_errors
    assert [(s.path, s.body) for s in server.seen] == [("/v1/web", b"2")] * 2

    refused = sandbox.run_task(module, 1, transport=HttpTransport({"mail": Route(server.url)}), limits=limits)
    assert refused.output == {"error": "refused"} and "no route for endpoint" in refused.refusals[0]

    failing = sandbox.run_task(module, 1, transport=transport(server, "/status/503"), limits=limits)
    assert failing.output == {"error": "failed"} and "HTTP 503" in failing.api_errors[0]
    assert len(server.seen) == 3
