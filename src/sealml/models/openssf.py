"""Model signatures in the OpenSSF model signing format (``model-signing`` on PyPI).

A signature is a Sigstore bundle (v0.3) holding a DSSE envelope over an in-toto statement
whose predicate lists every file of the model with its SHA-256, and whose subject is the
root digest over them. Keys are ECDSA P-256, signatures DER; the bundle names the key by
the SHA-256 of its PEM text (``verificationMaterial.publicKey.hint``). Bundles are parsed
strictly: unknown fields, other media types and non-standard base64 are refused, as the
reference verifier does. ``docs/formats.md`` has the field-by-field description.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..crypto.canonical import parse_json
from ..crypto.dsse import pae
from ..crypto.signing import KeyFormatError, Signer, SigningKey, VerifyingKey
from ..errors import IntegrityError, UsageError
from .manifest import Manifest, Resource, hash_model, root_digest

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
MAX_BUNDLE = 64 << 20


def key_hint(key: VerifyingKey) -> str:
    """How a bundle names its key: SHA-256 of the PEM SubjectPublicKeyInfo text."""
    return hashlib.sha256(key.pem().encode("ascii")).hexdigest()


def statement(manifest: Manifest, name: str) -> bytes:
    """The in-toto statement for *manifest*, as the exact bytes that get signed."""
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": manifest.root_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": list(manifest.ignore_paths),
            },
            "resources": [
                {"name": r.name, "algorithm": "sha256", "digest": r.digest}
                for r in manifest.resources
            ],
        },
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_manifest(manifest: Manifest, name: str, key: Signer) -> bytes:
    """A bundle signing *manifest* with *key* (must be ECDSA P-256)."""
    if key.public_key.algorithm != "ecdsa-p256":
        raise UsageError("model signatures need an ECDSA P-256 key (the format allows EC only)")
    payload = statement(manifest, name)
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(key.public_key)},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii")}],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode("utf-8")


def sign_model(
    model: Path, key: Signer, signature: Path, ignore: list[str] | None = None
) -> Manifest:
    """Sign the file or folder *model*, writing the bundle to *signature*."""
    manifest = hash_model(model, ignore=ignore or (), signature=signature)
    name = model.resolve().name
    signature.write_bytes(sign_manifest(manifest, name, key))
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A parsed, not yet verified, signature bundle."""

    payload: bytes
    signature: bytes
    hint: str | None


def parse_bundle(data: bytes) -> Bundle:
    """Parse a bundle strictly; anything unexpected is an IntegrityError."""
    if len(data) > MAX_BUNDLE:
        raise IntegrityError("the signature file is too large to be a model signature")
    try:
        bundle = parse_json(data)  # (orjson: nesting beyond 1,024 levels is a ValueError)
        _exact_keys(bundle, {"mediaType", "verificationMaterial", "dsseEnvelope"}, set())
        if bundle["mediaType"] != BUNDLE_MEDIA_TYPE:
            raise ValueError(f"media type {str(bundle['mediaType'])[:60]!r}")
        material = bundle["verificationMaterial"]
        _exact_keys(
            material, set(), {"publicKey", "tlogEntries", "certificate", "x509CertificateChain"}
        )
        if "publicKey" not in material:
            raise ValueError("only key-based signatures are supported (no certificate)")
        _exact_keys(material["publicKey"], set(), {"hint"})
        hint = material["publicKey"].get("hint")
        envelope = bundle["dsseEnvelope"]
        _exact_keys(envelope, {"payload", "payloadType", "signatures"}, set())
        if envelope["payloadType"] != PAYLOAD_TYPE:
            raise ValueError("payload type is not in-toto")
        first = envelope["signatures"][0]
        _exact_keys(first, {"sig"}, {"keyid"})
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(first["sig"], validate=True)
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as error:
        raise IntegrityError(f"not a valid model signature bundle: {str(error)[:100]}") from None
    return Bundle(payload, signature, str(hint) if hint is not None else None)


def _exact_keys(value: Any, required: set[str], optional: set[str]) -> None:
    if not isinstance(value, dict):
        raise ValueError("expected an object")
    keys = set(value)
    if not required <= keys or not keys <= required | optional:
        raise ValueError(f"unexpected fields {sorted(keys - required - optional)[:3]}")


def hinted_key(bundle: Bundle, keys: Sequence[VerifyingKey]) -> VerifyingKey:
    """The one of a signer's *keys* (current first, then retired) the bundle names, or,
    when it names none, the one its signature verifies with (else the current one)."""
    for key in keys:
        if bundle.hint == key_hint(key):
            return key
        if bundle.hint is None and key.verify(bundle.signature, pae(PAYLOAD_TYPE, bundle.payload)):
            return key
    if bundle.hint is None:
        return keys[0]
    raise IntegrityError("the signature names a different key than the signer's")


def signed_manifest(bundle: Bundle, key: VerifyingKey) -> Manifest:
    """Check *bundle*'s signature with *key*; returns the manifest it vouches for."""
    if bundle.hint is not None and bundle.hint != key_hint(key):
        raise IntegrityError("the signature names a different key than the one given")
    if not key.verify(bundle.signature, pae(PAYLOAD_TYPE, bundle.payload)):
        raise IntegrityError("the model signature does not verify with this key")
    try:
        body = json.loads(bundle.payload)
        if body["_type"] != STATEMENT_TYPE or body["predicateType"] != PREDICATE_TYPE:
            raise ValueError("not a model signing statement")
        (subject,) = body["subject"]
        claimed = str(subject["digest"]["sha256"])
        serialization = body["predicate"]["serialization"]
        if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
            raise ValueError(f"unsupported serialization {serialization.get('method')!r}")
        resources = tuple(_resource(item) for item in body["predicate"]["resources"])
        ignore = tuple(str(p) for p in serialization.get("ignore_paths") or ())
    except (ValueError, KeyError, TypeError) as error:
        raise IntegrityError(f"the signed statement is malformed: {str(error)[:100]}") from None
    if root_digest(resources) != claimed:
        raise IntegrityError("the signed root digest does not match the signed file list")
    return Manifest(resources, ignore)


def _resource(item: Any) -> Resource:
    if item["algorithm"] != "sha256":
        raise ValueError(f"unsupported digest algorithm {str(item['algorithm'])[:40]!r}")
    return Resource(str(item["name"]), str(item["digest"]))


def verify_model(model: Path, signature: Path, key: VerifyingKey) -> Manifest:
    """Verify the file or folder *model* against the bundle in *signature*.

    Any changed, added or removed file fails, as does a bundle signed by another key.
    """
    bundle = parse_bundle(signature.read_bytes())
    signed = signed_manifest(bundle, key)
    actual = hash_model(model, ignore=signed.ignore_paths, signature=signature)
    compare(signed, actual)
    return signed


def compare(signed: Manifest, actual: Manifest) -> None:
    """Raise an IntegrityError naming the first difference between two manifests."""
    expected, found = signed.as_map(), actual.as_map()
    changed = sorted(n for n in expected.keys() & found.keys() if expected[n] != found[n])
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    if changed:
        raise IntegrityError(f"model file changed since signing: {changed[0]}")
    if missing:
        raise IntegrityError(f"model file missing since signing: {missing[0]}")
    if extra:
        raise IntegrityError(f"model file added since signing: {extra[0]}")


def load_public_key(path: Path) -> VerifyingKey:
    try:
        return VerifyingKey.from_pem(path.read_bytes())
    except (OSError, KeyFormatError) as error:
        raise UsageError(f"{path}: not a usable public key ({error})") from None


def load_private_key(path: Path) -> SigningKey:
    try:
        return SigningKey.from_pkcs8(path.read_bytes())
    except (OSError, KeyFormatError) as error:
        raise UsageError(f"{path}: not a usable unencrypted private key ({error})") from None
