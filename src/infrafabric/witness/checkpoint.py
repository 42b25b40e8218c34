"""Signed checkpoints of the chain head (Ed25519).

A checkpoint is a C2SP *signed note* whose body follows the C2SP
``tlog-checkpoint`` layout::

    infrafabric/<namespace>        origin line
    1234                           size: number of entries (= seq of the head)
    q3Vz...base64...=              the head entry's hash (32 bytes, base64)
                                   blank line
    — <key name> <base64(key id || signature)>

The third line is the hash of entry ``size`` (our chain is a hash chain, not
a Merkle tree). The key id is the first 4 bytes of SHA-256(key name || 0x0A ||
0x01 || public key), as C2SP signed notes define for Ed25519; the signature
covers the body (the three lines with their newlines).

A checkpoint kept somewhere else (a file, another system) lets ``verify``
catch what a bare chain cannot: a truncated tail and a full rewrite.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# cryptography is imported by the methods that sign or verify: a command that does neither
# (most of them) does not pay for loading it at start-up
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infrafabric.errors import ConfigurationError

__all__ = ["Checkpoint", "Signer", "Verifier", "key_id"]

DASH = "\u2014"


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain of ``origin`` had ``size`` entries and
    entry ``size`` hashed to ``head_hash``."""

    origin: str
    size: int
    head_hash: str  # hex
    key_name: str
    signature: bytes  # key id (4) + Ed25519 signature (64)

    @property
    def body(self) -> bytes:
        head = base64.b64encode(bytes.fromhex(self.head_hash)).decode()
        return f"{self.origin}\n{self.size}\n{head}\n".encode()

    def to_text(self) -> str:
        return (self.body.decode() + "\n"
                + f"{DASH} {self.key_name} {base64.b64encode(self.signature).decode()}\n")

    @classmethod
    def parse(cls, text: str, *, source: str = "<checkpoint>") -> Checkpoint:
        """Parse the text form; :class:`ConfigurationError` naming what is wrong."""
        body, sep, sigs = text.partition("\n\n")
        lines = body.split("\n")
        if not sep or len(lines) != 3:
            raise ConfigurationError(f"{source}: not a checkpoint (expected 3 body lines, a blank line "
                                     "and a signature line)")
        origin, size_text, hash_b64 = lines
        try:
            size = int(size_text)
            head = base64.b64decode(hash_b64, validate=True)
        except ValueError as exc:
            raise ConfigurationError(f"{source}: bad size or hash line: {exc}") from exc
        if size < 0 or len(head) != 32:
            raise ConfigurationError(f"{source}: size must be >= 0 and the hash 32 bytes")
        sig_line = sigs.strip().split("\n")[0] if sigs.strip() else ""
        parts = sig_line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise ConfigurationError(f"{source}: missing or malformed signature line")
        try:
            signature = base64.b64decode(parts[2], validate=True)
        except ValueError as exc:
            raise ConfigurationError(f"{source}: signature is not base64") from exc
        if len(signature) != 68:
            raise ConfigurationError(f"{source}: signature must be 4 + 64 bytes")
        return cls(origin, size, head.hex(), parts[1], signature)


class Verifier:
    """Checks checkpoint signatures against one public key."""

    def __init__(self, name: str, public: bytes) -> None:
        self.name = name
        self.public = public
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self.key = Ed25519PublicKey.from_public_bytes(public)
        self.id = key_id(name, public)

    def check(self, cp: Checkpoint) -> str | None:
        """None if ``cp`` is signed by this key, else what is wrong."""
        if cp.key_name != self.name or cp.signature[:4] != self.id:
            return f"signed by key {cp.key_name!r}, not the trusted key {self.name!r}"
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(cp.signature[4:], cp.body)
        except InvalidSignature:
            return "the signature does not match the checkpoint (forged or altered)"
        return None

    def to_text(self) -> str:
        return f"{self.name}+{self.id.hex()}+{base64.b64encode(self.public).decode()}\n"

    @classmethod
    def parse(cls, text: str, *, source: str = "<key>") -> Verifier:
        try:
            name, _, public_b64 = text.strip().split("+", 2)  # base64 may contain '+'
            return cls(name, base64.b64decode(public_b64, validate=True))
        except ValueError as exc:
            raise ConfigurationError(f"{source}: not a verifier key (name+id+base64)") from exc


class Signer(Verifier):
    """Signs checkpoints. The private key never leaves this object or its file."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._private = private
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        super().__init__(name, public)

    def sign(self, origin: str, size: int, head_hash: str) -> Checkpoint:
        unsigned = Checkpoint(origin, size, head_hash, self.name, b"")
        return Checkpoint(origin, size, head_hash, self.name, self.id + self._private.sign(unsigned.body))

    def __repr__(self) -> str:  # never show key material
        return f"Signer({self.name!r}, id={self.id.hex()})"

    @classmethod
    def load(cls, directory: str | os.PathLike[str], name: str = "infrafabric-witness") -> Signer | None:
        """The key in ``directory/witness.key`` if there is one (never creates it)."""
        path = Path(directory) / "witness.key"
        return cls.load_or_create(directory, name) if path.exists() else None

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str], name: str = "infrafabric-witness") -> Signer:
        """The key in ``directory/witness.key`` (created 0600 on first use)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        path = Path(directory) / "witness.key"
        if path.exists():
            raw = path.read_bytes()
            if len(raw) != 32:
                raise ConfigurationError(f"{path}: not a 32-byte Ed25519 private key")
            return cls(name, Ed25519PrivateKey.from_private_bytes(raw))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        signer = cls(name, private)
        (Path(directory) / "witness.pub").write_text(signer.to_text())
        return signer
