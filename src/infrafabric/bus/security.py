"""TLS and credentials for the connection to the engine, from the bus URL or the environment.

A bus URL names *files* and *names*, never secrets, so that it can be printed,
logged and witnessed as it is. Its options, each with the environment
variable used when the URL does not give it:

==================  ======================  ============================================
URL option          environment             what
==================  ======================  ============================================
``tls=1``           ``IF_BUS_TLS``          TLS, checked against the system's CAs
``tls_ca=PATH``     ``IF_BUS_TLS_CA``       the CA bundle that signs the server's
                                            certificate (turns TLS on)
``tls_cert=PATH``   ``IF_BUS_TLS_CERT``     this client's certificate (with ``tls_key``)
``tls_key=PATH``    ``IF_BUS_TLS_KEY``      its private key
``user=NAME``       ``IF_BUS_USER``         user name; the password from
                                            ``IF_BUS_PASSWORD`` or the file
                                            ``password_file=PATH`` /
                                            ``IF_BUS_PASSWORD_FILE``
``token_file=PATH`` ``IF_BUS_TOKEN_FILE``   NATS: an authorization token (or
                                            ``IF_BUS_TOKEN`` itself)
``nkey=PATH``       ``IF_BUS_NKEY``         NATS: an NKEY seed file
``creds=PATH``      ``IF_BUS_CREDS``        NATS: a ``.creds`` file (user JWT and seed)
==================  ======================  ============================================

Everything is checked when the bus is built, before any connection: a file
that cannot be read, a certificate that does not load, a certificate without
its key, a password without a user, two ways to authenticate, or a NATS-only
option on etcd is a :class:`~infrafabric.errors.ConfigurationError` (exit 2)
naming the option and where it came from. :meth:`Security.describe` says what
is used without any secret.
"""

from __future__ import annotations

import datetime
import functools
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infrafabric.errors import BusAccessError, ConfigurationError

__all__ = ["ENV", "NATS_ONLY", "OPTIONS", "Security", "access_failure"]

#: URL option → the environment variable read when the URL does not set it
ENV: dict[str, str] = {
    "tls": "IF_BUS_TLS",
    "tls_ca": "IF_BUS_TLS_CA",
    "tls_cert": "IF_BUS_TLS_CERT",
    "tls_key": "IF_BUS_TLS_KEY",
    "user": "IF_BUS_USER",
    "password_file": "IF_BUS_PASSWORD_FILE",
    "token_file": "IF_BUS_TOKEN_FILE",
    "nkey": "IF_BUS_NKEY",
    "creds": "IF_BUS_CREDS",
}
#: the URL options this module reads (every engine)
OPTIONS = frozenset(ENV)
#: options only NATS understands
NATS_ONLY = frozenset({"token_file", "nkey", "creds"})
PASSWORD_ENV = "IF_BUS_PASSWORD"
TOKEN_ENV = "IF_BUS_TOKEN"
#: a secret file larger than this is not a secret file
_SECRET_LIMIT = 64 << 10
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Security:
    """How to reach the engine safely: TLS material and one way to authenticate.

    Secrets (``password``, ``token``) are excluded from ``repr``; file paths
    are not secrets. ``origin`` says where each setting came from
    (``"URL option tls_ca"``, ``"$IF_BUS_USER"``), for messages."""

    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nkey: Path | None = None
    creds: Path | None = None
    origin: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_options(cls, scheme: str, options: Mapping[str, str],
                     env: Mapping[str, str] | None = None) -> Security:
        """The settings of a ``scheme`` bus URL's ``options``, completed from
        ``env`` (default :data:`os.environ`); :class:`ConfigurationError` if
        they are unusable."""
        env = os.environ if env is None else env
        values: dict[str, str] = {}
        origin: dict[str, str] = {}
        for option, var in ENV.items():
            if option in options:
                values[option], origin[option] = options[option], f"URL option {option}"
            elif env.get(var):
                values[option], origin[option] = env[var], f"${var}"
        for option in sorted(NATS_ONLY & values.keys()):
            if scheme != "nats":
                raise ConfigurationError(f"{origin[option]}: {scheme}:// does not take {option} (NATS only)",
                                         hint="etcd authenticates with user/password or a client certificate")

        def path(option: str) -> Path | None:
            if option not in values:
                return None
            p = Path(values[option]).expanduser()
            if not p.is_file() or not os.access(p, os.R_OK):
                raise ConfigurationError(f"{origin[option]}={values[option]}: not a readable file",
                                         hint="give the path of the file on this machine")
            return p

        tls_text = values.get("tls", "").lower()
        if tls_text not in _TRUE | _FALSE:
            raise ConfigurationError(f"{origin['tls']}={values['tls']!r}: expected 1 or 0")
        ca, cert, key = path("tls_ca"), path("tls_cert"), path("tls_key")
        if (cert is None) != (key is None):
            given, missing = ("tls_cert", "tls_key") if cert else ("tls_key", "tls_cert")
            raise ConfigurationError(f"{origin[given]} is set but {missing} is not: a client certificate "
                                     "needs its private key and the key its certificate")
        password, token = _secret(values, origin, env, "password_file", PASSWORD_ENV), \
            _secret(values, origin, env, "token_file", TOKEN_ENV)
        if password is not None:
            origin.setdefault("password", origin.get("password_file", f"${PASSWORD_ENV}"))
        if token is not None:
            origin.setdefault("token", origin.get("token_file", f"${TOKEN_ENV}"))
        user = values.get("user") or None
        if user is not None and password is None:
            raise ConfigurationError(f"{origin['user']} names user {user!r} but no password is given",
                                     hint=f"set {PASSWORD_ENV}, or password_file=PATH "
                                          f"(or ${ENV['password_file']})")
        if password is not None and user is None:
            raise ConfigurationError(f"a password is given ({origin['password']}) but no user",
                                     hint=f"add user=NAME to the URL or set {ENV['user']}")
        if token is not None and scheme != "nats":
            raise ConfigurationError(f"{origin['token']}: {scheme}:// takes no token (NATS only)")
        methods = [m for m, v in (("user", user), ("token", token), ("nkey", values.get("nkey")),
                                  ("creds", values.get("creds"))) if v]
        if len(methods) > 1:
            raise ConfigurationError("two ways to authenticate are given: " +
                                     " and ".join(origin[m] for m in methods),
                                     hint="keep one of them")
        security = cls(tls=tls_text in _TRUE or bool(ca or cert), ca=ca, cert=cert, key=key, user=user,
                       password=password, token=token, nkey=path("nkey"), creds=path("creds"),
                       origin=origin)
        if security.tls:
            security.ssl_context()  # a certificate that does not load fails now, naming its file
        return security

    def cert_expired(self) -> bool:
        """Whether this client's certificate is past its end date."""
        if self.cert is None:
            return False
        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        except (OSError, ValueError):
            return False
        return cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC)

    @property
    def anonymous(self) -> bool:
        """Whether no credential of any kind is presented (a client certificate counts)."""
        return not (self.user or self.token or self.nkey or self.creds or self.cert)

    @functools.cached_property
    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None and self.key is not None:
            try:
                context.load_cert_chain(str(self.cert), str(self.key))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigurationError(
                    f"{self.origin.get('tls_cert')}={self.cert} with "
                    f"{self.origin.get('tls_key')}={self.key}: not a PEM certificate and its matching "
                    f"private key ({_reason(exc)})") from exc
        return context

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (None without TLS): server certificate and
        host name checked, against ``ca`` or the system's CAs."""
        if not self.tls:
            return None
        try:
            return self._context
        except ssl.SSLError as exc:
            raise ConfigurationError(f"{self.origin.get('tls_ca')}={self.ca}: not a PEM CA bundle "
                                     f"({_reason(exc)})") from exc

    def pem(self, which: str) -> bytes | None:
        """The bytes of the ``ca``, ``cert`` or ``key`` file (for gRPC, which takes bytes)."""
        p: Path | None = getattr(self, which)
        return p.read_bytes() if p is not None else None

    def describe(self) -> str:
        """What is used, without any secret: ``TLS (CA /etc/if/ca.pem), user alice
        (password from $IF_BUS_PASSWORD)``."""
        parts: list[str] = []
        if self.tls:
            tls = [f"CA {self.ca}" if self.ca else "system CAs"]
            if self.cert:
                tls.append(f"client certificate {self.cert}")
            parts.append(f"TLS ({', '.join(tls)})")
        else:
            parts.append("no TLS")
        if self.user:
            parts.append(f"user {self.user} (password from {self.origin.get('password')})")
        elif self.token:
            parts.append(f"token from {self.origin.get('token')}")
        elif self.nkey:
            parts.append(f"NKEY seed {self.nkey}")
        elif self.creds:
            parts.append(f"credentials file {self.creds}")
        elif not self.cert:
            parts.append("no credentials")
        return ", ".join(parts)


def _secret(values: dict[str, str], origin: dict[str, str], env: Mapping[str, str], file_option: str,
            env_var: str) -> str | None:
    """A password or token: from the file ``file_option`` names, else from ``env_var``."""
    if file_option in values:
        p = Path(values[file_option]).expanduser()
        try:
            if p.stat().st_size > _SECRET_LIMIT:
                raise ConfigurationError(f"{origin[file_option]}={p}: too large to be a secret file")
            text = p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{origin[file_option]}={values[file_option]}: cannot read it "
                                     f"({getattr(exc, 'strerror', None) or exc})") from exc
        first = text.splitlines()[0].strip() if text else ""
        if not first:
            raise ConfigurationError(f"{origin[file_option]}={p}: the file is empty")
        return first
    value = env.get(env_var, "").strip()
    return value or None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc)


#: what engines and TLS libraries say, lower-cased, → the cause they mean
_CLIENT_CERT_MISSING = ("certificate required", "peer did not return a certificate",
                        "didn't provide a certificate", "did not provide a certificate")
_CLIENT_CERT_EXPIRED = ("alert certificate expired",)
_CLIENT_CERT_REFUSED = ("alert bad certificate", "alert unknown ca", "alert certificate unknown",
                        "certificate signed by unknown authority", "alert decrypt error")
#: gRPC's word for a handshake the server broke off (it logs the alert apart)
_CLIENT_CERT_VAGUE = ("unwrap failed", "tsi data corrupted")
_AUTH_REFUSED = ("authorization violation", "authentication failed", "user name is empty",
                 "invalid user id or password", "authorization error", "authentication error",
                 "invalid auth token", "user name not found", "permission denied")
_NOT_TLS = ("wrong version number", "record layer failure", "packet length too long", "http request",
            "first record does not look like a tls handshake")


def access_failure(where: str, security: Security, cause: BaseException | str,
                   server: Mapping[str, object] | None = None) -> BusAccessError | None:
    """The :class:`~infrafabric.errors.BusAccessError` that ``cause`` (an
    exception, or an engine's error text) means for a client with ``security``
    connecting to ``where``, naming the cause and what to change; None if it
    is not about TLS or credentials. ``server``: what the server announced
    before it failed (NATS's INFO: ``tls_required``, ``tls_verify``,
    ``auth_required``), which tells a bare connection reset apart."""
    server = server or {}
    if server and security.tls and not server.get("tls_required"):
        return BusAccessError(f"{where} does not offer TLS, and this client asks for it: nothing was sent",
                              hint="configure TLS on the server, or check that the URL names the right "
                                   "server; drop tls options only on a trusted network")
    text = cause if isinstance(cause, str) else f"{cause}"
    lower = text.lower().replace("_", " ")
    ca = f"the CA in {security.ca}" if security.ca else "the system's CAs"
    fix_ca = ("give the CA that signed the server's certificate: tls_ca=PATH in the URL or "
              "IF_BUS_TLS_CA (for `ifctl coordinator start --listen`: its ca.pem)")
    if isinstance(cause, ssl.SSLCertVerificationError) or "certificate verify failed" in lower:
        detail = getattr(cause, "verify_message", "") or text
        if not security.tls:
            return BusAccessError(f"{where} requires TLS, and this client does not use it ({detail})",
                                  hint=fix_ca + ", or tls=1 if a public CA signed it")
        if "expired" in detail.lower():
            return BusAccessError(f"the certificate of {where} has expired ({detail})",
                                  hint="the server needs a new certificate; the client's settings are fine")
        if "mismatch" in detail.lower():
            return BusAccessError(f"the certificate of {where} does not name that host ({detail})",
                                  hint="connect by a name or address the certificate lists, or issue "
                                       "one that lists it")
        return BusAccessError(f"the certificate of {where} is not trusted: {ca} did not sign it ({detail})",
                              hint=fix_ca)
    if any(m in lower for m in _CLIENT_CERT_EXPIRED) or (
            any(m in lower for m in _CLIENT_CERT_REFUSED + _CLIENT_CERT_VAGUE) and security.cert_expired()):
        return BusAccessError(f"{where} refused this client's certificate {security.cert}: it has expired",
                              hint="issue a new client certificate and point tls_cert/tls_key at it")
    if any(m in lower for m in _CLIENT_CERT_MISSING) or (not security.cert and any(
            m in lower for m in ("alert handshake failure", *_CLIENT_CERT_REFUSED, *_CLIENT_CERT_VAGUE))):
        return BusAccessError(f"{where} requires a client certificate, and this client gives none"
                              if not security.cert else
                              f"{where} refused this client's certificate {security.cert}",
                              hint="give one its CA signed: tls_cert=PATH and tls_key=PATH (or "
                                   "IF_BUS_TLS_CERT and IF_BUS_TLS_KEY)")
    if any(m in lower for m in _CLIENT_CERT_REFUSED + _CLIENT_CERT_VAGUE):
        return BusAccessError(f"{where} refused this client's certificate {security.cert}: not signed by "
                              "a CA it trusts, or revoked", hint="ask its operator for a certificate its "
                                                                 "CA signs")
    if any(m in lower for m in _AUTH_REFUSED):
        if security.anonymous:
            return BusAccessError(f"{where} requires authentication, and this client gives no credentials",
                                  hint="user=NAME in the URL (or IF_BUS_USER) with IF_BUS_PASSWORD; or for "
                                       "NATS a token (IF_BUS_TOKEN), nkey=PATH or creds=PATH")
        return BusAccessError(f"{where} refused this client's credentials ({security.describe()})",
                              hint="check them with the server's operator; a revoked user is refused too")
    if security.tls and any(m in lower for m in _NOT_TLS):
        return BusAccessError(f"the TLS handshake with {where} failed: it does not speak TLS there ({text})",
                              hint="drop tls/tls_ca from the URL and the environment, or turn TLS on in the "
                                   "server")
    if not security.tls and "socket closed" in lower:  # gRPC, when a TLS port is spoken to in clear
        return BusAccessError(f"{where} closed the connection at once: it most likely requires TLS, and this "
                              "client does not use it", hint=fix_ca)
    if server.get("tls_required") and not security.tls:
        return BusAccessError(f"{where} requires TLS, and this client does not use it", hint=fix_ca)
    if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError):
        # the server hung up without a word: what it announced says why
        if server.get("tls_verify") and not security.cert:
            return BusAccessError(f"{where} requires a client certificate, and this client gives none "
                                  f"(it closed the connection: {text})",
                                  hint="give one its CA signed: tls_cert=PATH and tls_key=PATH")
        if server.get("tls_verify") and security.tls:
            # TLS 1.3: the server judges the client's certificate after the client's side of the
            # handshake is done, and may reset the connection before its alert is read
            expired = security.cert_expired()
            why = "it has expired" if expired else "not signed by a CA it trusts, or revoked"
            return BusAccessError(f"{where} refused this client's certificate {security.cert}: {why} (it "
                                  f"closed the connection: {text})",
                                  hint="issue a new client certificate and point tls_cert/tls_key at it"
                                  if expired else "ask its operator for a certificate its CA signs")
        if server.get("auth_required") and security.anonymous:
            return BusAccessError(f"{where} requires authentication, and this client gives no credentials "
                                  f"(it closed the connection: {text})",
                                  hint="user=NAME in the URL (or IF_BUS_USER) with IF_BUS_PASSWORD; or for "
                                       "NATS a token (IF_BUS_TOKEN), nkey=PATH or creds=PATH")
        if server.get("auth_required"):
            # it hung up as soon as the credentials arrived, before its "Authorization Violation" was read
            return BusAccessError(f"{where} refused this client's credentials ({security.describe()}): it "
                                  f"closed the connection once they were sent ({text})",
                                  hint="check them with the server's operator; a revoked user is refused too")
    return None
