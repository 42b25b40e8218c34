"""Parsing of bus URLs: ``scheme://host:port[,host:port...][/][?option=value&...]``."""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from infrafabric.bus.security import NATS_ONLY
from infrafabric.bus.security import OPTIONS as SECURITY_OPTIONS
from infrafabric.errors import ConfigurationError

__all__ = ["COMMON_OPTIONS", "DEFAULT_PORTS", "SCHEMES", "BusURL", "parse_url", "redact_url", "with_options"]

SCHEMES = ("memory", "nats", "etcd")
DEFAULT_PORTS = {"nats": 4222, "etcd": 2379}
#: options every backend accepts
COMMON_OPTIONS = frozenset({"timeout", "namespace"})
BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    "memory": frozenset(),
    "nats": frozenset({"bucket", "replicas", "history", "connect_timeout"}) | SECURITY_OPTIONS,
    "etcd": frozenset({"connect_timeout", "pubsub_ttl"}) | (SECURITY_OPTIONS - NATS_ONLY),
}
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]")
_NAME_RE = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class BusURL:
    """A parsed bus URL. ``hosts`` is empty for ``memory://``; ``name`` is the
    memory store's name (``memory://NAME``)."""

    scheme: str
    hosts: tuple[tuple[str, int], ...] = ()
    name: str = ""
    options: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def timeout(self) -> float:
        return _positive_float(self, "timeout", 5.0)

    @property
    def namespace(self) -> str:
        value = self.options.get("namespace", "default")
        if not _NAME_RE.fullmatch(value) or value.startswith("_"):
            raise ConfigurationError(
                f"bad namespace {value!r} in bus URL {self.raw!r}",
                hint="a namespace is letters, digits, '_' and '-', not starting with '_' (reserved)",
            )
        return value

    def float_option(self, name: str, default: float) -> float:
        return _positive_float(self, name, default)

    def int_option(self, name: str, default: int) -> int:
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigurationError(
                f"option {name}={raw!r} in bus URL {self.raw!r} must be a positive integer"
            )
        return value

    def __str__(self) -> str:
        return self.display

    @functools.cached_property
    def display(self) -> str:
        """The URL in canonical form (hosts, sorted options)."""
        netloc = ",".join(f"{h}:{p}" for h, p in self.hosts) or self.name
        query = "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.scheme}://{netloc}" + (f"?{query}" if query else "")


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:?#]*)(?::[^/@?#]*)?@")


#: query options whose value is a secret, were someone to put one in a URL (``*_file`` names a path)
_SECRET_OPTION = re.compile(r"(?i)(?P<name>[^&?=]*(?:pass|token|secret|auth|apikey|api_key|credential)"
                            r"[^&=]*)=(?P<value>[^&#]*)")


def redact_url(raw: str) -> str:
    """``raw`` with any password in it, and the value of any option named like
    a secret, replaced by ``***``, for messages."""
    shown = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", raw)
    scheme, sep, rest = shown.partition("?")
    if not sep:
        return shown
    return scheme + sep + _SECRET_OPTION.sub(
        lambda m: m[0] if m["name"].lower().endswith("_file") else f"{m['name']}=***", rest)


def with_options(raw: str, **options: str) -> str:
    """``raw`` with the given query options set (replacing any already there)."""
    url = parse_url(raw)
    return str(dataclasses.replace(url, options={**url.options, **options}, raw=""))


def _positive_float(url: BusURL, name: str, default: float) -> float:
    raw = url.options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigurationError(
            f"option {name}={raw!r} in bus URL {url.raw!r} must be a positive number of seconds"
        )
    return value


def parse_url(raw: str) -> BusURL:
    """Parse and validate a bus URL, raising :class:`ConfigurationError` (exit 2)
    with a message naming the offending part."""
    shown = redact_url(raw) if isinstance(raw, str) else raw
    if not isinstance(raw, str) or "://" not in raw:
        raise ConfigurationError(
            f"malformed bus URL {shown!r}",
            hint="expected scheme://host:port, e.g. nats://127.0.0.1:4222, "
            "etcd://127.0.0.1:2379 or memory://",
        )
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise ConfigurationError(f"malformed bus URL {shown!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        raise ConfigurationError(
            f"{shown} is an agent gateway, not a bus: this command needs the fleet's bus, which only the "
            "coordinator's machine (and operators with bus credentials) reach",
            hint="through the gateway: ifctl task next|heartbeat|complete|fail|release and ifctl mcp; run "
                 "other commands on the coordinator's machine")
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"unknown bus URL scheme {parts.scheme!r} in {shown!r}",
            hint="supported schemes: " + ", ".join(f"{s}://" for s in SCHEMES),
        )
    if parts.path not in ("", "/"):
        raise ConfigurationError(f"unexpected path {parts.path!r} in bus URL {shown!r}")
    if parts.fragment:
        raise ConfigurationError(f"unexpected fragment #{parts.fragment} in bus URL {shown!r}")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigurationError(f"malformed query in bus URL {shown!r}: {exc}") from exc
    options: dict[str, str] = {}
    allowed = COMMON_OPTIONS | BACKEND_OPTIONS[scheme]
    for key, value in pairs:
        if key not in allowed:
            raise ConfigurationError(
                f"unknown option {key!r} in bus URL {shown!r}",
                hint=f"{scheme}:// accepts: " + ", ".join(sorted(allowed)),
            )
        if key in options:
            raise ConfigurationError(f"option {key!r} given twice in bus URL {shown!r}")
        options[key] = value

    if scheme == "memory":
        name = parts.netloc or "default"
        if not _NAME_RE.fullmatch(name):
            raise ConfigurationError(f"bad memory store name {name!r} in bus URL {shown!r}")
        url = BusURL(scheme, (), name, options, shown)
    else:
        url = BusURL(scheme, _parse_hosts(scheme, parts.netloc, shown), "", options, shown)
    # Validate typed options now so a bad value fails before any connection attempt.
    _ = url.timeout, url.namespace
    return url


def _parse_hosts(scheme: str, netloc: str, shown: str) -> tuple[tuple[str, int], ...]:
    if "@" in netloc:
        raise ConfigurationError(f"credentials in bus URL {shown!r} are not supported",
                                 hint="the password was not printed; a URL is printed and logged, so secrets "
                                      "go in the environment or a file: user=NAME in the URL (or "
                                      "IF_BUS_USER) with IF_BUS_PASSWORD or password_file=PATH")
    if not netloc:
        raise ConfigurationError(
            f"bus URL {shown!r} names no host", hint=f"e.g. {scheme}://127.0.0.1:{DEFAULT_PORTS[scheme]}"
        )
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, sep, port_text = item.rpartition(":")
        if not sep or host.endswith(":"):
            host, port_text = item, ""
        if not host or not _HOST_RE.fullmatch(host):
            raise ConfigurationError(f"bad host {item!r} in bus URL {shown!r}")
        if port_text == "":
            port = DEFAULT_PORTS[scheme]
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise ConfigurationError(f"bad port {port_text!r} in bus URL {shown!r}")
        hosts.append((host.strip("[]"), port))
    return tuple(hosts)
