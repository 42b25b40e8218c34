"""The default :class:`~infrafabric.chassis.hostapi.Transport`: a guest's ``api_call`` over HTTP(S).

An :class:`HttpTransport` knows a fixed set of :class:`Route` s, keyed by the
first segment of an endpoint: with the route ``search`` at
``https://api.example.com/v1``, the endpoint ``search/web`` is sent to
``https://api.example.com/v1/web`` and the endpoint ``search`` to the base URL
itself. The guest chooses only the rest of the path and the request body; it
can reach nothing but the configured routes:

* an endpoint without a route, or with an empty, ``.`` or ``..`` segment, is
  refused (:class:`~infrafabric.errors.CredentialScopeError`, the guest sees
  ``-1``);
* redirects are followed only within the same origin (scheme, host, port);
* proxies from the environment are ignored unless ``use_env_proxy=True``.

A route's secret is fetched from the :class:`SecretProvider` on every call
and sent as ``<header>: <scheme> <secret>``; it is never stored on the
transport, never in an error message, and scrubbed (if 8 characters or more)
from responses that echo it back.

Every call is bounded by ``min(timeout, route.timeout)`` from connect to the
last byte of the response: a watchdog shuts the connection down at the
deadline, so a server that trickles bytes cannot hold a guest past it (name
resolution is the one step the standard library cannot interrupt). Failures
raise :class:`ApiCallError` (:class:`ApiTimeoutError` for the deadline); the
guest sees ``-2``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import math
import re
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from infrafabric.chassis.credentials import SecretProvider
from infrafabric.chassis.hostapi import Transport
from infrafabric.chassis.models import ENDPOINT_PATTERN
from infrafabric.errors import ConfigurationError, CredentialScopeError, InfraFabricError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT_SECONDS",
    "ApiCallError",
    "ApiTimeoutError",
    "HttpTransport",
    "Route",
]

#: default cap on a response body (1 MiB)
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
#: default per-route cap on one call, whatever time the task has left
DEFAULT_TIMEOUT_SECONDS = 30.0
_MAX_RESPONSE_LIMIT = 64 * 1024 * 1024
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection",
                               "user-agent", "proxy-authorization"})
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")
_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_ENDPOINT = re.compile(ENDPOINT_PATTERN)
_REDACTED = "[redacted]"
_MIN_REDACTED_LEN = 8
_USER_AGENT = "InfraFabric-chassis"
_CHUNK = 64 * 1024


class ApiCallError(InfraFabricError):
    """An ``api_call`` failed in the transport (the guest sees ``-2``).

    :attr:`status` is the HTTP status when the upstream answered one (non-2xx,
    or a redirect that was not followed), else None. The message names the
    endpoint, never a secret.
    """

    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class ApiTimeoutError(ApiCallError, TimeoutError):
    """An ``api_call`` did not complete within its time limit."""


@dataclass(frozen=True)
class Route:
    """Where the endpoints below one name go, and how to authenticate there.

    * ``base_url`` — ``http://`` or ``https://`` URL, no userinfo, query or fragment;
    * ``secret`` — the name of a secret in the transport's :class:`SecretProvider`
      (not the secret itself), or None to send no credential;
    * ``header``/``scheme`` — the secret is sent as ``<header>: <scheme> <secret>``
      (``scheme=""`` sends the bare secret, e.g. ``header="X-Api-Key"``);
    * ``method``, ``content_type`` — of the request carrying the guest's body;
    * ``max_response_bytes`` — a longer response fails the call (1 B - 64 MiB);
    * ``timeout`` — seconds one call may take at most (0 < t <= 3600).
    """

    base_url: str
    secret: str | None = None
    header: str = "Authorization"
    scheme: str = "Bearer"
    method: str = "POST"
    content_type: str = "application/json"
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    timeout: float = DEFAULT_TIMEOUT_SECONDS


_ROUTE_KEYS = tuple(f.name for f in fields(Route))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _check_route(name: Any, route: Any) -> Route:
    if not isinstance(name, str) or _ROUTE_NAME.fullmatch(name) is None:
        raise ConfigurationError(f"routes: invalid route name {name!r}",
                                 hint="the first segment of an endpoint: letters, digits and '._:-'")
    where = f"routes.{name}"
    if not isinstance(route, Route):
        raise ConfigurationError(f"{where}: expected a Route, got {type(route).__name__}")

    def bad(field: str, problem: str, hint: str | None = None) -> ConfigurationError:
        return ConfigurationError(f"{where}.{field}: {problem}", hint=hint)

    url = route.base_url
    if not isinstance(url, str) or not url:
        raise bad("base_url", "must be a non-empty string")
    if re.search(r"[\x00-\x20\x7f]", url):
        raise bad("base_url", "must not contain whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise bad("base_url", f"scheme must be http or https, got {parts.scheme or 'none'!r}")
    if "@" in parts.netloc:
        raise bad("base_url", "must not contain userinfo (user:password@)",
                  hint="name a secret for the route instead")
    if "?" in url or "#" in url:
        raise bad("base_url", "must not contain a query or fragment")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise bad("base_url", f"invalid port ({exc})") from None
    if not parts.hostname:
        raise bad("base_url", "has no host")
    if route.secret is not None:
        if not isinstance(route.secret, str):
            raise bad("secret", "must be a secret name (string) or null")
        try:
            SecretProvider._check_name(route.secret)
        except ConfigurationError as exc:
            raise bad("secret", exc.message, exc.hint) from None
    if not isinstance(route.header, str) or _TOKEN.fullmatch(route.header) is None:
        raise bad("header", f"not an HTTP header name: {route.header!r}")
    if route.header.lower() in _RESERVED_HEADERS:
        raise bad("header", f"{route.header!r} is set by the transport")
    if not isinstance(route.scheme, str) or (route.scheme and _TOKEN.fullmatch(route.scheme) is None):
        raise bad("scheme", f"not an authentication scheme: {route.scheme!r}",
                  hint="a single token such as 'Bearer', or '' for the bare secret")
    if not isinstance(route.method, str) or route.method.upper() not in _METHODS:
        raise bad("method", f"must be one of {', '.join(sorted(_METHODS))}, got {route.method!r}")
    if not isinstance(route.content_type, str) or _HEADER_VALUE.fullmatch(route.content_type) is None:
        raise bad("content_type", f"not a header value: {route.content_type!r}")
    size = route.max_response_bytes
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= _MAX_RESPONSE_LIMIT:
        raise bad("max_response_bytes", f"must be an integer within 1-{_MAX_RESPONSE_LIMIT}, got {size!r}")
    timeout = route.timeout
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not math.isfinite(timeout) \
            or not 0 < timeout <= 3600:
        raise bad("timeout", f"must be a number of seconds within (0, 3600], got {timeout!r}")
    return replace(route, method=route.method.upper(), timeout=float(timeout))


class _Watch:
    """The sockets of one call, shut down when its deadline passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.expired = False

    def connect(self, address: tuple[str, int], timeout: float | None = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        sock = socket.create_connection(address, timeout, source_address)
        # a duplicate descriptor survives TLS wrapping (which detaches the original)
        dup = sock.dup()
        with self._lock:
            self._socks.append(dup)
            expired = self.expired
        if expired:
            self._shutdown(dup)
        return sock

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            self._shutdown(sock)

    def close(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, watch: _Watch, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = watch.connect


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, watch: _Watch, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = watch.connect


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self._watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        watch = self._watch

        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            return _HTTPConnection(host, watch=watch, **kwargs)

        return self.do_open(connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._watch = watch
        self._ssl = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        watch, context = self._watch, self._ssl

        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            return _HTTPSConnection(host, watch=watch, context=context, **kwargs)

        return self.do_open(connection, req)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the origin of the request it answers."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self._endpoint = endpoint

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            fp.close()
            scheme, host, port = _origin(newurl)
            raise ApiCallError(f"{self._endpoint}: HTTP {code} redirect to another origin "
                               f"({scheme}://{host}:{port}) refused", endpoint=self._endpoint, status=code)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpTransport(Transport):
    """Performs ``api_call`` as HTTP(S) requests to configured routes (see the module docs).

    ``routes`` maps an endpoint's first segment to its :class:`Route`;
    ``secrets`` supplies the secrets routes name (required if any does);
    ``ssl_context`` verifies HTTPS servers (default: the system's trust
    store); ``use_env_proxy`` honours ``HTTPS_PROXY`` and friends.
    Thread-safe: calls share no state.

    :raises ConfigurationError: a route is invalid (the message names it,
        e.g. ``routes.search.base_url``).
    """

    def __init__(self, routes: Mapping[str, Route], *, secrets: SecretProvider | None = None,
                 ssl_context: ssl.SSLContext | None = None, use_env_proxy: bool = False) -> None:
        if not isinstance(routes, Mapping):
            raise ConfigurationError(f"routes: expected a mapping, got {type(routes).__name__}")
        checked = {name: _check_route(name, route) for name, route in routes.items()}
        if secrets is not None and not isinstance(secrets, SecretProvider):
            raise ConfigurationError(f"secrets: expected a SecretProvider, got {type(secrets).__name__}")
        for name, route in checked.items():
            if route.secret is not None and secrets is None:
                raise ConfigurationError(f"routes.{name}.secret: names secret {route.secret!r} "
                                         "but the transport has no SecretProvider",
                                         hint="pass secrets=EnvSecretProvider() or FileSecretProvider(dir)")
        self._routes = MappingProxyType(checked)
        self._secrets = secrets
        self._ssl = ssl_context
        self.use_env_proxy = bool(use_env_proxy)

    @classmethod
    def from_mapping(cls, data: Any, *, secrets: SecretProvider | None = None,
                     ssl_context: ssl.SSLContext | None = None, use_env_proxy: bool = False
                     ) -> HttpTransport:
        """Build a transport from plain data, as loaded from YAML or JSON::

            {"search": {"base_url": "https://api.example.com/v1", "secret": "search"}}

        Each route's keys are the fields of :class:`Route`; an unknown key, a
        missing ``base_url`` or a value of the wrong type raises
        :class:`ConfigurationError` naming it (``routes.search.xyz``).
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"routes: expected a mapping of route name to route, "
                                     f"got {type(data).__name__}")
        routes: dict[str, Route] = {}
        for name, spec in data.items():
            if not isinstance(name, str) or _ROUTE_NAME.fullmatch(name) is None:
                raise ConfigurationError(f"routes: invalid route name {name!r}",
                                         hint="the first segment of an endpoint: letters, digits and '._:-'")
            if not isinstance(spec, Mapping):
                raise ConfigurationError(f"routes.{name}: expected a mapping, got {type(spec).__name__}")
            for key in spec:
                if key not in _ROUTE_KEYS:
                    raise ConfigurationError(f"routes.{name}.{key}: unknown key",
                                             hint=f"known keys: {', '.join(_ROUTE_KEYS)}")
            if "base_url" not in spec:
                raise ConfigurationError(f"routes.{name}.base_url: required")
            routes[name] = Route(**spec)
        return cls(routes, secrets=secrets, ssl_context=ssl_context, use_env_proxy=use_env_proxy)

    @property
    def routes(self) -> Mapping[str, Route]:
        """The configured routes (read-only)."""
        return self._routes

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={route.base_url}" for name, route in self._routes.items())
        return f"HttpTransport({shown})"

    def url_for(self, endpoint: str) -> str:
        """The URL ``endpoint`` is sent to; :class:`CredentialScopeError` if it has no route."""
        return self._resolve(endpoint)[1]

    def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
        """Send ``body`` to ``endpoint``'s route; return the 2xx response body.

        :raises CredentialScopeError: no route for ``endpoint``, or a bad endpoint.
        :raises ConfigurationError: the route's secret is missing or unusable in a header.
        :raises ApiTimeoutError: the call took longer than ``min(timeout, route.timeout)``.
        :raises ApiCallError: anything else (status with the non-2xx status).
        """
        route, url = self._resolve(endpoint)
        limit = min(float(timeout), route.timeout)
        if not limit > 0:
            raise ApiTimeoutError(f"{endpoint}: no time left for the call", endpoint=endpoint)
        secret = self._secret(endpoint, route)
        data = body if body or route.method not in ("GET", "DELETE") else None
        request = urllib.request.Request(url, data=data, method=route.method,
                                         headers={"User-Agent": _USER_AGENT, "Accept": "*/*"})
        if data is not None:
            request.add_header("Content-Type", route.content_type)
        if secret is not None:
            request.add_header(route.header, f"{route.scheme} {secret}" if route.scheme else secret)
        watch = _Watch()
        opener = self._opener(watch, endpoint)
        timer = threading.Timer(limit, watch.expire)
        timer.daemon = True
        timer.start()
        try:
            with opener.open(request, timeout=limit) as response:
                payload = self._read(response, endpoint, route)
        except ApiCallError as exc:
            if watch.expired and not isinstance(exc, ApiTimeoutError):
                raise self._timed_out(endpoint, limit) from None
            raise
        except urllib.error.HTTPError as exc:
            exc.close()
            phrase = _scrub(str(exc.reason), secret)[:200]
            raise ApiCallError(f"{endpoint}: HTTP {exc.code} {phrase}".rstrip(), endpoint=endpoint,
                               status=exc.code) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if watch.expired or isinstance(reason, TimeoutError):
                raise self._timed_out(endpoint, limit) from None
            text = _scrub(f"{type(reason).__name__}: {reason}", secret)[:300]
            raise ApiCallError(f"{endpoint}: request failed: {text}", endpoint=endpoint) from None
        finally:
            timer.cancel()
            watch.close()
        if watch.expired:
            raise self._timed_out(endpoint, limit)
        if secret is not None and len(secret) >= _MIN_REDACTED_LEN:
            payload = redact(payload, secret)
        return payload

    # -- internals ----------------------------------------------------------------------

    def _resolve(self, endpoint: str) -> tuple[Route, str]:
        if not isinstance(endpoint, str) or _ENDPOINT.fullmatch(endpoint) is None:
            raise CredentialScopeError(f"invalid endpoint {str(endpoint)[:80]!r}")
        if any(s in ("", ".", "..") for s in endpoint.split("/")):
            raise CredentialScopeError(f"endpoint {endpoint!r} has an empty, '.' or '..' segment")
        name, _, rest = endpoint.partition("/")
        route = self._routes.get(name)
        if route is None:
            raise CredentialScopeError(f"no route for endpoint {endpoint!r}",
                                       hint=f"configured routes: {', '.join(sorted(self._routes)) or 'none'}")
        return route, (route.base_url.rstrip("/") + "/" + rest if rest else route.base_url)

    def _secret(self, endpoint: str, route: Route) -> str | None:
        if route.secret is None:
            return None
        assert self._secrets is not None  # checked in __init__
        value = self._secrets.get(route.secret)
        if not isinstance(value, str) or _HEADER_VALUE.fullmatch(value) is None \
                or value != value.strip():
            raise ConfigurationError(f"{endpoint}: secret {route.secret!r} cannot be sent in an HTTP header "
                                     "(empty, non-ASCII, control characters or surrounding whitespace)")
        return value

    def _opener(self, watch: _Watch, endpoint: str) -> urllib.request.OpenerDirector:
        opener = urllib.request.OpenerDirector()
        proxies = urllib.request.ProxyHandler() if self.use_env_proxy else urllib.request.ProxyHandler({})
        context = self._ssl or _default_ssl_context()
        for handler in (proxies, urllib.request.UnknownHandler(), _HTTPHandler(watch),
                        _HTTPSHandler(watch, context), urllib.request.HTTPDefaultErrorHandler(),
                        _SameOriginRedirects(endpoint), urllib.request.HTTPErrorProcessor()):
            opener.add_handler(handler)
        return opener

    @staticmethod
    def _read(response: http.client.HTTPResponse, endpoint: str, route: Route) -> bytes:
        cap = route.max_response_bytes
        length = response.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > cap:
            raise ApiCallError(f"{endpoint}: response of {int(length)} bytes exceeds the route's "
                               f"max_response_bytes ({cap})", endpoint=endpoint, status=response.status)
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = response.read(min(_CHUNK, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:
            raise ApiCallError(f"{endpoint}: response exceeds the route's max_response_bytes ({cap})",
                               endpoint=endpoint, status=response.status)
        return b"".join(chunks)

    @staticmethod
    def _timed_out(endpoint: str, limit: float) -> ApiTimeoutError:
        return ApiTimeoutError(f"{endpoint}: no complete response within {limit:.3g} s", endpoint=endpoint)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _scrub(text: str, secret: str | None) -> str:
    if not secret or len(secret) < _MIN_REDACTED_LEN:
        return text.replace(secret, _REDACTED) if secret else text
    return redact(text.encode(), secret).decode("utf-8", errors="replace")


def _reflections(secret: str) -> list[bytes]:
    """The forms an upstream may echo a secret in: as it is, JSON-escaped,
    URL-encoded, hex and base64 (standard and URL-safe, at each of the three
    byte alignments it can have inside longer encoded data)."""
    raw = secret.encode()
    forms = {raw, json.dumps(secret)[1:-1].encode(), json.dumps(secret, ensure_ascii=False)[1:-1].encode(),
             json.dumps(secret)[1:-1].replace("/", "\\/").encode(),
             urllib.parse.quote(secret, safe="").encode(), urllib.parse.quote_plus(secret).encode(),
             raw.hex().encode()}
    for k in range(3):  # base64 of the secret where it starts k bytes into a 3-byte group
        encoded = base64.b64encode(b"\0" * k + raw).rstrip(b"=")
        core = encoded[-(-8 * k // 6):(8 * (k + len(raw))) // 6]
        forms |= {core, core.replace(b"+", b"-").replace(b"/", b"_")}
    return sorted((f for f in forms if len(f) >= _MIN_REDACTED_LEN), key=len, reverse=True)


def redact(payload: bytes, secret: str) -> bytes:
    """``payload`` with the secret removed in every form it may be reflected in
    (:func:`_reflections`, in any letter case) and with any run of at least a
    third of it (at least 8 characters) removed too, so a secret split across
    fields does not reach the guest whole."""
    forms = _reflections(secret)
    window = max(_MIN_REDACTED_LEN, len(secret) // 3)
    pieces = {secret[i:i + window].encode() for i in range(len(secret) - window + 1)}
    pattern = re.compile(b"|".join(re.escape(f) for f in [*forms, *sorted(pieces, key=len, reverse=True)]),
                         re.IGNORECASE)
    return pattern.sub(_REDACTED.encode(), payload)
