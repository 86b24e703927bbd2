"""Signing keys: ECDSA P-256 (default, what OpenSSF model signing accepts) and Ed25519.

Signatures are DER-encoded for ECDSA (SHA-256 digest) and raw 64 bytes for Ed25519.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

Algorithm = Literal["ecdsa-p256", "ed25519"]
_PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyFormatError(ValueError):
    """Key bytes that do not parse as a supported key."""


class VerifyingKey:
    """A public key that checks signatures."""

    def __init__(self, key: _PublicKey) -> None:
        if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError("only P-256 elliptic-curve keys are supported")
        self._key = key

    @property
    def algorithm(self) -> Algorithm:
        return "ed25519" if isinstance(self._key, ed25519.Ed25519PublicKey) else "ecdsa-p256"

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when *signature* is valid for *data* under this key."""
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, data)
            else:
                self._key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def spki_der(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def pem(self) -> str:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def raw(self) -> bytes:
        """Raw 32-byte Ed25519 public key (for signed-note key IDs)."""
        if not isinstance(self._key, ed25519.Ed25519PublicKey):
            raise KeyFormatError("raw encoding exists for Ed25519 keys only")
        return self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, hex."""
        return hashlib.sha256(self.spki_der()).hexdigest()

    @classmethod
    def from_der(cls, der: bytes) -> VerifyingKey:
        """A DER SubjectPublicKeyInfo."""
        try:
            key = serialization.load_der_public_key(der)
        except ValueError:
            raise KeyFormatError("not a DER public key") from None
        return cls._supported(key)

    @classmethod
    def from_pem(cls, pem: str | bytes) -> VerifyingKey:
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise KeyFormatError("not a PEM public key") from None
        return cls._supported(key)

    @classmethod
    def _supported(cls, key: object) -> VerifyingKey:
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise KeyFormatError("unsupported public key type")
        return cls(key)

    @classmethod
    def from_raw_ed25519(cls, raw: bytes) -> VerifyingKey:
        try:
            return cls(ed25519.Ed25519PublicKey.from_public_bytes(raw))
        except ValueError:
            raise KeyFormatError("not a raw Ed25519 public key") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyingKey) and self.spki_der() == other.spki_der()

    def __hash__(self) -> int:
        return hash(self.spki_der())

    def __repr__(self) -> str:
        return f"VerifyingKey({self.algorithm}, {self.fingerprint()[:16]})"


class Signer(Protocol):
    """Anything that signs with a private key it may never reveal: a :class:`SigningKey`
    in memory, or a key inside a PKCS#11 token."""

    @property
    def public_key(self) -> VerifyingKey: ...

    def sign(self, data: bytes) -> bytes: ...


class SigningKey:
    """A private key. Its repr never shows key material."""

    def __init__(self, key: _PrivateKey) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError("only P-256 elliptic-curve keys are supported")
        self._key = key

    @classmethod
    def generate(cls, algorithm: Algorithm = "ecdsa-p256") -> SigningKey:
        if algorithm == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> VerifyingKey:
        return VerifyingKey(self._key.public_key())

    @property
    def algorithm(self) -> Algorithm:
        return self.public_key.algorithm

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def pkcs8_der(self) -> bytes:
        """Unencrypted PKCS#8 DER; only ever passed straight to an encryption function."""
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def pkcs8_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM, for service key files written 0600."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pkcs8(cls, data: bytes) -> SigningKey:
        """Load an unencrypted PKCS#8 key in DER or PEM form."""
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError):
            raise KeyFormatError("not an unencrypted PKCS#8 private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyFormatError("unsupported private key type")
        return cls(key)

    def __repr__(self) -> str:
        return f"SigningKey({self.algorithm}, ***)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a SigningKey cannot be pickled")
