"""Key-encryption keys in a PKCS#11 token (an HSM, or SoftHSM for tests and development).

Each KEK version is an AES-256 secret key object generated inside the token, marked
sensitive and not extractable, labelled ``sealml:<workspace id>:kek:<n>``. Data keys are
wrapped and unwrapped by the token itself (CKM_AES_GCM, a fresh 96-bit nonce, the KEK id and
the artifact's context as associated data): the KEK never leaves the token, and a wrapped
key moved to another artifact or KEK fails to unwrap. Destroying a KEK deletes its object.

The workspace's Ed25519 signing key (checkpoints, principal records, the approved policy)
is generated in the token too, labelled ``sealml:<workspace id>:signing``, its private half
sensitive and not extractable; the token signs (CKM_EDDSA).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..crypto.secret import Secret
from ..crypto.signing import VerifyingKey
from ..errors import AuthenticationError, ConfigError, IntegrityError, UsageError
from .provider import DEK_SIZE, WrappedKey

_PREFIX = "hsm:"
NONCE_SIZE = 12
TAG_BITS = 128


@dataclass(frozen=True)
class TokenSettings:
    """Which PKCS#11 module and token hold a workspace's KEKs."""

    module: str
    token: str


def _wrap_context(kek_id: str, context: bytes) -> bytes:
    return b"sealml/pkcs11/v1\x00" + kek_id.encode("ascii") + b"\x00" + context


class Pkcs11Provider:
    """A :class:`~sealml.keys.provider.KeyProvider` whose KEKs live in a PKCS#11 token."""

    name = "pkcs11"

    def __init__(self, settings: TokenSettings, pin: Secret, workspace_id: str) -> None:
        self._settings = settings
        self._shared: _Shared | None = _acquire(settings, pin)
        self._session = self._shared.session
        self._label = f"sealml:{workspace_id}:kek:"
        self._signing_label = f"sealml:{workspace_id}:signing"
        self._keys: dict[str, Any] = {}
        self._load()

    def __repr__(self) -> str:
        return f"Pkcs11Provider({len(self._keys)} KEKs)"

    def close(self) -> None:
        if self._shared is not None:
            _release(self._settings)
            self._shared = None

    def discard(self) -> None:
        """Delete every key of this workspace from the token (a failed ``init`` only)."""
        from pkcs11 import Attribute

        with self._shared_lock():
            for key in self._keys.values():
                key.destroy()
        for signing in self.signing_keys():
            self.destroy_signing_key(signing)
        with self._shared_lock():  # a half without its other half, too
            for half in list(self._session.get_objects({Attribute.LABEL: self._signing_label})):
                half.destroy()
        self._keys.clear()
        self.close()

    # -- signing keys: the workspace's, and services' ------------------------------------

    def create_signing_key(self) -> TokenSigningKey:
        """Generate an Ed25519 signing key for the workspace in the token: its first (a new
        workspace), or the next one (a workspace key rotation), labelled apart."""
        from pkcs11 import KeyType, Mechanism

        ed25519_oid = "1.3.101.112"
        label = self._generate_pair(
            KeyType.EC_EDWARDS, ed25519_oid, Mechanism.EC_EDWARDS_KEY_PAIR_GEN, self._signing_label
        )
        return _labelled(self.signing_keys(), label)

    def signing_key(self) -> TokenSigningKey | None:
        """The workspace's first signing key in the token, or None when the token holds
        none (a workspace created before signing keys moved into tokens keeps its key in
        the keystore)."""
        first = [key for key in self.signing_keys() if key.label == self._signing_label]
        return first[0] if first else None

    def signing_keys(self) -> list[TokenSigningKey]:
        """Every signing key of this workspace in the token (more than one only while a
        workspace key rotation is under way)."""
        from pkcs11 import Attribute

        return [
            TokenSigningKey(
                self, private, _ed25519_public_key(bytes(public[Attribute.EC_POINT])), label
            )
            for label, private, public in self._pairs(self._signing_label)
        ]

    def create_principal_key(self, principal_id: str) -> TokenEcdsaKey:
        """Generate an ECDSA P-256 key for a service principal in the token (sensitive, not
        extractable): it signs there, and no key file exists."""
        from pkcs11 import KeyType, Mechanism

        base = self._principal_label(principal_id)
        label = self._generate_pair(KeyType.EC, "secp256r1", Mechanism.EC_KEY_PAIR_GEN, base)
        return _labelled(self.principal_keys(principal_id), label)

    def principal_keys(self, principal_id: str) -> list[TokenEcdsaKey]:
        """The keys of a service principal in the token, oldest first."""
        from pkcs11.util.ec import encode_ec_public_key

        return [
            TokenEcdsaKey(self, private, VerifyingKey.from_der(encode_ec_public_key(public)), label)
            for label, private, public in self._pairs(self._principal_label(principal_id))
        ]

    def destroy_signing_key(self, key: TokenSigningKey | TokenEcdsaKey) -> None:
        """Delete both halves of a key no longer used (what it signed stays verifiable
        with the public key its record keeps)."""
        from pkcs11 import Attribute

        with self._shared_lock():
            for half in list(self._session.get_objects({Attribute.LABEL: key.label})):
                half.destroy()

    def _principal_label(self, principal_id: str) -> str:
        return f"{self._signing_label.rpartition(':')[0]}:principal:{principal_id}"

    def _next_label(self, base: str) -> str:
        """*base* for a first key, else *base*:<n>, n one more than any taken."""
        numbers = [_label_number(label, base) or 1 for label, _, _ in self._pairs(base)]
        return f"{base}:{max(numbers) + 1}" if numbers else base

    def _generate_pair(self, key_type: Any, curve: str, mechanism: Any, base: str) -> str:
        """Generate a key pair (the private half sensitive, not extractable) labelled
        after the keys *base* already names; its label."""
        from pkcs11 import Attribute
        from pkcs11.util.ec import encode_named_curve_parameters

        label = self._next_label(base)
        with self._shared_lock():
            parameters = self._session.create_domain_parameters(
                key_type, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
            )
            parameters.generate_keypair(
                mechanism=mechanism,
                store=True,
                label=label,
                private_template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                },
            )
        return label

    def _pairs(self, base: str) -> list[tuple[str, Any, Any]]:
        """(label, private half, public half) of every complete key pair labelled *base*
        or *base*:<n>, in order of n."""
        from pkcs11 import Attribute, ObjectClass

        halves: dict[str, dict[Any, Any]] = {}
        with self._shared_lock():
            for kind in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for item in self._session.get_objects({Attribute.CLASS: kind}):
                    label = str(item[Attribute.LABEL])
                    if _label_number(label, base) is not None:
                        halves.setdefault(label, {})[kind] = item
        complete = [
            (label, found[ObjectClass.PRIVATE_KEY], found[ObjectClass.PUBLIC_KEY])
            for label, found in halves.items()
            if len(found) == 2
        ]
        return sorted(complete, key=lambda pair: _label_number(pair[0], base) or 0)

    def _shared_lock(self) -> threading.Lock:
        if self._shared is None:
            raise UsageError("the PKCS#11 provider is closed")
        return self._shared.lock

    def _load(self) -> None:
        from pkcs11 import Attribute, ObjectClass

        found: dict[str, Any] = {}
        with self._shared_lock():
            for key in self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
                label = str(key[Attribute.LABEL])
                number = label.removeprefix(self._label)
                if label.startswith(self._label) and number.isdigit():
                    found[f"{_PREFIX}{int(number)}"] = key
        self._keys = dict(sorted(found.items(), key=lambda item: _number(item[0])))

    @classmethod
    def initialise(cls, settings: TokenSettings, pin: Secret, workspace_id: str) -> Pkcs11Provider:
        """Open the token for a new workspace and generate its first KEK there."""
        provider = cls(settings, pin, workspace_id)
        if provider._keys:
            raise UsageError(f"the token already holds KEKs of workspace {workspace_id}")
        provider.rotate()
        return provider

    # -- KeyProvider ----------------------------------------------------------------------

    def current_kek_id(self) -> str:
        if not self._keys:
            raise IntegrityError("the token holds no key-encryption key of this workspace")
        return next(reversed(self._keys))

    def kek_ids(self) -> list[str]:
        return list(self._keys)

    def wrap(self, dek: bytes, context: bytes) -> WrappedKey:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        if len(dek) != DEK_SIZE:
            raise ValueError("data keys are 32 bytes")
        nonce = os.urandom(NONCE_SIZE)

        def encrypt(kek_id: str, key: Any) -> bytes:
            params = GCMParams(nonce, _wrap_context(kek_id, context), TAG_BITS)
            return bytes(key.encrypt(dek, mechanism=Mechanism.AES_GCM, mechanism_param=params))

        kek_id, sealed = self._with_kek(None, encrypt)
        return WrappedKey(kek_id, nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        from pkcs11 import Mechanism, exceptions
        from pkcs11.mechanisms import GCMParams

        nonce, sealed = wrapped.blob[:NONCE_SIZE], wrapped.blob[NONCE_SIZE:]

        def decrypt(kek_id: str, key: Any) -> bytes:
            params = GCMParams(nonce, _wrap_context(kek_id, context), TAG_BITS)
            try:
                return bytes(
                    key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=params)
                )
            except exceptions.ObjectHandleInvalid:
                raise
            except exceptions.PKCS11Error:
                raise IntegrityError("a wrapped data key failed authentication") from None

        _, dek = self._with_kek(wrapped.kek_id, decrypt)
        if len(dek) != DEK_SIZE:
            raise IntegrityError("a wrapped data key has the wrong size")
        return dek

    def _with_kek(
        self, kek_id: str | None, operation: Callable[[str, Any], bytes]
    ) -> tuple[str, bytes]:
        """Run *operation* with KEK *kek_id* (None: the current one). A KEK this process
        does not know, or whose object is gone, sends it to the token once more: another
        process may have rotated (created a KEK, re-wrapped, destroyed the old one)."""
        from pkcs11 import exceptions

        for looked_again in (False, True):
            if looked_again or (kek_id is not None and kek_id not in self._keys):
                self.refresh()
            chosen = kek_id or self.current_kek_id()
            key = self._keys.get(chosen)
            if key is None:
                break
            try:
                with self._shared_lock():
                    return chosen, operation(chosen, key)
            except exceptions.ObjectHandleInvalid:
                continue
        raise IntegrityError(f"key-encryption key {kek_id or chosen} is no longer held")

    def refresh(self) -> None:
        """Find the KEKs the token holds now (another process may have rotated)."""
        self._load()

    def rotate(self) -> str:
        self._load()
        number = max((_number(k) for k in self._keys), default=0) + 1
        with self._shared_lock():
            self._generate(number)
        self._load()
        return f"{_PREFIX}{number}"

    def _generate(self, number: int) -> None:
        from pkcs11 import Attribute, KeyType

        self._session.generate_key(
            KeyType.AES,
            256,
            label=f"{self._label}{number}",
            store=True,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
            },
        )

    def destroy(self, kek_ids: list[str]) -> None:
        if self.current_kek_id() in kek_ids:
            raise UsageError("the current key-encryption key cannot be destroyed")
        for kek_id in kek_ids:
            key = self._keys.pop(kek_id, None)
            if key is not None:
                with self._shared_lock():
                    key.destroy()


class _TokenKey:
    """A private key that stays in the token, known by its public half and label."""

    def __init__(
        self, provider: Pkcs11Provider, private: Any, public: VerifyingKey, label: str
    ) -> None:
        self._provider = provider
        self._private = private
        self._public = public
        self.label = label

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a key in a token cannot be pickled")

    @property
    def public_key(self) -> VerifyingKey:
        return self._public


class TokenSigningKey(_TokenKey):
    """A :class:`~sealml.crypto.signing.Signer` whose Ed25519 private key stays in the
    token: every signature is made there."""

    def __repr__(self) -> str:
        return "TokenSigningKey(ed25519, in the PKCS#11 token)"

    def sign(self, data: bytes) -> bytes:
        from pkcs11 import Mechanism

        with self._provider._shared_lock():
            return bytes(self._private.sign(data, mechanism=Mechanism.EDDSA))


class TokenEcdsaKey(_TokenKey):
    """A :class:`~sealml.crypto.signing.Signer` whose ECDSA P-256 private key stays in the
    token (a service principal's): the SHA-256 digest is computed here and signed there
    (CKM_ECDSA), and the signature DER-encoded as every other ECDSA signature sealml makes."""

    def __repr__(self) -> str:
        return "TokenEcdsaKey(ecdsa-p256, in the PKCS#11 token)"

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        from pkcs11 import Mechanism

        digest = hashlib.sha256(data).digest()
        with self._provider._shared_lock():
            raw = bytes(self._private.sign(digest, mechanism=Mechanism.ECDSA))
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )


_Keyed = TypeVar("_Keyed", bound="_TokenKey")


def _labelled(keys: list[_Keyed], label: str) -> _Keyed:
    """The key labelled *label* among *keys* (the one just generated)."""
    for key in keys:
        if key.label == label:
            return key
    raise IntegrityError("the token did not keep the key it generated")


def _label_number(label: str, base: str) -> int | None:
    """1 for *base* itself, n for *base*:<n>, None for any other label."""
    if label == base:
        return 1
    suffix = label.removeprefix(base + ":")
    return int(suffix) if suffix != label and suffix.isdigit() else None


def _ed25519_public_key(point: bytes) -> VerifyingKey:
    """CKA_EC_POINT of an Ed25519 key: the 32-byte key, DER-wrapped as an OCTET STRING by
    most tokens, bare by some."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
    if len(raw) != 32:
        raise IntegrityError("the token's signing key is not an Ed25519 key")
    return VerifyingKey(ed25519.Ed25519PublicKey.from_public_bytes(raw))


@dataclass
class _Shared:
    """One logged-in session per token and process: PKCS#11 logs an application in, not
    a session, so a second login would fail; its users share it under a lock."""

    session: Any
    pin_digest: bytes = field(repr=False)  # a PIN is short: its hash is a secret too
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 1


_OPEN: dict[TokenSettings, _Shared] = {}
_OPEN_LOCK = threading.Lock()


def _acquire(settings: TokenSettings, pin: Secret) -> _Shared:
    digest = hashlib.sha256(pin.reveal()).digest()
    with _OPEN_LOCK:
        shared = _OPEN.get(settings)
        if shared is not None:
            if not hmac.compare_digest(shared.pin_digest, digest):
                raise AuthenticationError(f"wrong PIN for the token {settings.token!r}")
            shared.users += 1
            return shared
        shared = _Shared(_login(settings, pin), digest)
        _OPEN[settings] = shared
        return shared


def _release(settings: TokenSettings) -> None:
    with _OPEN_LOCK:
        shared = _OPEN[settings]
        shared.users -= 1
        if shared.users == 0:
            del _OPEN[settings]
            shared.session.close()


def _login(settings: TokenSettings, pin: Secret) -> Any:
    import pkcs11
    from pkcs11 import exceptions

    try:
        library = pkcs11.lib(settings.module)
    except (RuntimeError, OSError, exceptions.PKCS11Error):
        raise ConfigError(f"cannot load the PKCS#11 module {settings.module}") from None
    try:
        token = library.get_token(token_label=settings.token)
    except exceptions.NoSuchToken:
        raise ConfigError(f"no PKCS#11 token labelled {settings.token!r}") from None
    try:
        return token.open(user_pin=pin.reveal().decode(), rw=True)
    except (exceptions.PinIncorrect, exceptions.PinLenRange, exceptions.ArgumentsBad):
        raise AuthenticationError(f"wrong PIN for the token {settings.token!r}") from None
    except exceptions.PinLocked:
        raise AuthenticationError(f"the token {settings.token!r} is locked") from None


def _number(kek_id: str) -> int:
    return int(kek_id.removeprefix(_PREFIX))
