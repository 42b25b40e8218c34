"""A small certificate authority, for serving other machines with TLS out of the box.

``ifctl coordinator start --listen`` needs a server certificate that agents on
other machines can check without a public CA: it makes a private CA under the
state directory (:func:`ensure_server_files`) and hands agents its
certificate, never its key. Keys are ECDSA P-256, written 0600. Built on
``cryptography``; nothing here talks to the network.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infrafabric.errors import ConfigurationError

__all__ = ["Issued", "ensure_server_files", "issue", "make_ca", "write_private"]

#: how long what this module makes lasts
CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "InfraFabric"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window(days: int, not_before: datetime.datetime | None) -> tuple[datetime.datetime, datetime.datetime]:
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return start, start + datetime.timedelta(days=days)


def make_ca(common_name: str = "InfraFabric fleet CA", *, days: int = CA_DAYS) -> Issued:
    """A self-signed CA certificate and its key."""
    key = _key()
    start, end = _window(days, None)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue(ca: Issued, common_name: str, *, hosts: tuple[str, ...] = (), client: bool = False,
          days: int = LEAF_DAYS, not_before: datetime.datetime | None = None) -> Issued:
    """A certificate signed by ``ca``: for a server reached by ``hosts`` (names
    or IP addresses, all in its subject alternative names), or, with
    ``client``, for a client whose user name is ``common_name``.
    ``not_before`` (with ``days``) places its validity (tests make expired ones)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    start, end = _window(days, not_before)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH] if client
                                                    else [ExtendedKeyUsageOID.SERVER_AUTH,
                                                          ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if hosts:
        names: list[x509.GeneralName] = []
        for host in dict.fromkeys(hosts):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only, atomically. The
    temporary file is new (``O_EXCL``, a random name, no symlink followed),
    so a file or link planted beside it in a shared directory changes nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def ensure_server_files(directory: Path, hosts: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """``(ca.pem, server.pem, server.key)`` under ``directory``: the CA is made
    once and kept; the server certificate is made again whenever ``hosts``
    are not all in it. The CA's key stays in ``directory`` (0600)."""
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca.key"
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    try:
        if ca_path.exists() and ca_key_path.exists():
            ca = Issued(ca_path.read_bytes(), ca_key_path.read_bytes())
        else:
            ca = make_ca()
            write_private(ca_key_path, ca.key)
            write_private(ca_path, ca.cert)
        if not (cert_path.exists() and key_path.exists() and _covers(cert_path.read_bytes(), hosts)):
            server = issue(ca, "infrafabric coordinator", hosts=hosts)
            write_private(key_path, server.key)
            write_private(cert_path, server.cert)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot make the TLS files under {directory}: {exc}") from exc
    return ca_path, cert_path, key_path


def _covers(pem: bytes, hosts: tuple[str, ...]) -> bool:
    """Whether the certificate ``pem`` names every host and is valid for 30 days more."""
    cert = x509.load_pem_x509_certificate(pem)
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not hosts
    named = {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    named |= set(san.get_values_for_type(x509.DNSName))
    return all(h in named for h in hosts)
