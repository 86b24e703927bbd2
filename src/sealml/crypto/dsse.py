"""DSSE (Dead Simple Signing Envelope) v1: signing and verifying envelopes.

The signature covers the pre-authentication encoding
``PAE = "DSSEv1" SP len(type) SP type SP len(body) SP body`` (lengths in ASCII decimal),
never the JSON envelope itself, so the payload type cannot be confused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from .signing import Signer, VerifyingKey


class EnvelopeError(ValueError):
    """An envelope that is malformed or carries no valid signature from a trusted key."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload_type: str, payload: bytes, key: Signer, keyid: str) -> dict[str, Any]:
    """An envelope over *payload* with one signature by *key*."""
    signature = key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode()}],
    }


def open_envelope(envelope: Any, keys: Mapping[str, VerifyingKey]) -> tuple[str, bytes, str]:
    """Verify *envelope* against *keys* (keyid → key); returns (payload type, payload, keyid
    of the first valid signature). Raises EnvelopeError otherwise."""
    try:
        payload_type = str(envelope["payloadType"])
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = list(envelope["signatures"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise EnvelopeError("not a DSSE envelope") from None
    message = pae(payload_type, payload)
    for entry in signatures:
        try:
            keyid = str(entry["keyid"])
            signature = base64.b64decode(entry["sig"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            continue
        key = keys.get(keyid)
        if key is not None and key.verify(signature, message):
            return payload_type, payload, keyid
    raise EnvelopeError("no signature on the envelope verifies with a trusted key")
